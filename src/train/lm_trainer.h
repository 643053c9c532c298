// Language-model training (issue 19): the LM task of the trainer. Rows of seq_len tokens come
// from token shards (data/lm_batches.h) as a pure function of (data seed, step, micro-batch),
// packed with document boundaries; the loss is the chunked linear cross-entropy over the
// decoder's hidden states (train/linear_cross_entropy.h), averaged over the step's target
// tokens; evaluation is the loss and perplexity on the validation split's first windows.
// Checkpoints are model folders (config.json, model.safetensors, the tokenizer's files) that
// `lintime forward/generate/perplexity`, fla and Hugging Face load, with the trainer state beside.
#pragma once

#include "train/lm_config.h"
#include "train/trainer.h"

#include <cstdint>
#include <string>

namespace lintime::train {

// The trainer's options and the device. Distributed (TrainerOptions::communicator): rank r
// trains on rows [s·R + r·R/W, s·R + (r+1)·R/W) of step s's R, and the step's loss is the mean
// over every rank's targets.
struct LmTrainOptions : TrainerOptions {
  LmTrainOptions() { out_dir = "runs/lm"; }
  std::string device = "auto";
};

struct LmTrainResult {
  int64_t steps = 0, total_steps = 0;
  double val_loss = 0, val_perplexity = 0;  // of the final model (not set when interrupted)
  double best_val_loss = 0;
  bool interrupted = false;
  std::string checkpoint_dir;
  int64_t parameters = 0;
  std::string device, precision;
  double wall_seconds = 0;
};

// Trains into options.out_dir: metrics.jsonl, checkpoint/ (a model folder plus
// optimizer.safetensors, trainer_state.json, train_config.json), result.json.
LmTrainResult train_lm(const LmTrainConfig& config, const LmTrainOptions& options);

// The compute precision `config.precision` means on `device` ("auto": bf16 on a GPU, fp32 else).
std::string resolved_precision(const std::string& precision, const std::string& device_type);

}  // namespace lintime::train
