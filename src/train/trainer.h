// The training loop, independent of the task (architecture.md, "Trainer and tasks"; llm.c's
// loop): per step, the micro-batches' forward and backward (gradient accumulation), gradient
// clipping, AdamW (fused on a GPU) at the schedule's learning rate; mixed precision (bf16 or
// fp16 compute with fp32 master weights and moments, fp16 with dynamic loss scaling);
// JSON-lines metrics and a progress bar; evaluation every N steps with early stop at a target
// score; atomic checkpoints, exact resume, and a checkpoint on SIGINT/SIGTERM. A task supplies
// the model, the loss of step s's micro-batch m (a pure function of (s, m), so a resumed run
// repeats the uninterrupted one) and the evaluation: MQAR (mqar_trainer.h), language modelling
// (lm_trainer.h).
#pragma once

#include "layers/module.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace lintime::train {

class Communicator;

// The [train] settings of a config: optimiser, schedule, steps, evaluation and checkpoint cadence
// (batch sizes and seed are read by the task).
struct OptimSettings {
  int64_t batch_size = 64;
  int64_t test_batch_size = 256;
  int64_t epochs = 1;
  int64_t max_steps = 0;  // 0: epochs decide
  double lr = 1e-3;
  std::vector<double> lr_sweep;  // non-empty: `lintime train` runs one training per value
  double weight_decay = 0.1;  // decoupled; not on norms and biases (1-D) unless decay_all_parameters
  bool decay_embeddings = true;  // zoology decays the (tied) embedding too
  // Decay every parameter, norms and biases included: torch's AdamW over model.parameters(),
  // as zoology's trainer does.
  bool decay_all_parameters = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::string schedule = "epoch_cosine";
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  double grad_clip = 1.0;  // <= 0: no clipping
  // The parameters' dtype in the forward and backward: "fp32", "fp64", or "bf16" / "fp16"
  // with fp32 master weights and AdamW moments (fp16 with dynamic loss scaling).
  std::string precision = "fp32";
  // bf16 only: false keeps no fp32 copies; AdamW updates the bf16 parameters with bf16 moments
  // (8 bytes per parameter instead of 16, as Hugging Face's and fla's bf16 runs train).
  bool master_weights = true;
  // bf16 without master weights: AdamW's moments in fp32 (12 bytes of weights, gradients and
  // moments per parameter instead of 8), the update computed in fp32 and rounded into the weights.
  bool fp32_moments = false;
  bool fused_adamw = true;  // on a GPU (AdamWOptions::fused)
  double initial_loss_scale = 65536.0;  // fp16: the dynamic loss scale's start (torch's GradScaler's)
  int64_t eval_every = 0;  // steps; 0: at the end of every epoch
  int64_t checkpoint_every = 0;  // steps; 0: at every evaluation
  int64_t log_every = 10;
  // Early stop once the task's evaluation score reaches it (MQAR: test accuracy; > 1 disables).
  double target_accuracy = 0.99;
  uint64_t seed = 0;              // model initialisation
  // Distributed runs: each rank keeps the master weights and AdamW moments of its 1/W of the
  // parameters only (ZeRO stage 1; weight_update.h).
  bool shard_optimizer = false;
};

struct TaskEvaluation {
  nlohmann::json record;  // one metrics.jsonl line (the trainer adds "step" and "eval": true)
  double score = 0;       // higher is better; early stop at OptimSettings::target_accuracy
  std::string summary;    // for the progress output: "test accuracy 0.953"
  double shown = NAN;     // the progress bar's value under score_name() (NaN: the score)
};

class TrainingTask {
 public:
  virtual ~TrainingTask() = default;
  // The model whose parameters are trained, on the training device.
  virtual layers::Module& model() = 0;
  // Stored as the checkpoint's config.json; a resume must find the same document.
  virtual nlohmann::json config_document() const = 0;
  // What determines the batches and initialisation (trainer_state.json's "rng").
  virtual nlohmann::json rng_description() const = 0;
  virtual int64_t steps_per_epoch() const = 0;
  virtual int64_t total_steps() const = 0;
  // Forward and backward passes per optimizer step (gradient accumulation).
  virtual int64_t micro_batches() const { return 1; }
  // The loss of micro-batch `micro` of step `step` in training mode, scaled so that the
  // micro-batches' losses (of every rank, when distributed) add up to the step's loss (their
  // gradients are summed); `tokens` receives its token count. A loss that needs no gradient
  // (a rank with no rows in this batch) is not backpropagated.
  virtual at::Tensor training_loss(int64_t step, int64_t micro, int64_t* tokens) = 0;
  // CUDA-graph capture (graphed_step.h): a task whose batches come in a few fixed shapes splits
  // training_loss(step, 0, tokens) into stage_batch — the host's work: step s's batch copied
  // into device buffers kept per shape, dropout seeded — and staged_loss, the device work alone
  // on those buffers, which is recorded once per shape and replayed. stage_batch returns the
  // batch's shape key. Only for tasks with one micro-batch per step.
  virtual bool stages_batches() const { return false; }
  virtual std::string stage_batch(int64_t step, int64_t* tokens);
  virtual at::Tensor staged_loss(const std::string& shape);
  // Every rank calls it; the trainer keeps rank 0's score, so that all ranks decide alike.
  virtual TaskEvaluation evaluate() = 0;
  // The score's name on the progress bar ("acc").
  virtual const char* score_name() const { return "score"; }
  // Whether training stops once the score reaches OptimSettings::target_accuracy.
  virtual bool stops_at_target() const { return true; }
  // Model FLOPs per trained token (forward and backward) for the metrics' FLOP/s; 0: unknown.
  virtual double flops_per_token() const { return 0; }
  // Set: the checkpoint is also a model folder with this config.json and these files beside
  // the weights (CheckpointContents).
  virtual nlohmann::json model_config() const { return nullptr; }
  virtual std::vector<std::pair<std::string, std::string>> checkpoint_files() const { return {}; }
  // (name, contents) of files written into every checkpoint.
  virtual std::vector<std::pair<std::string, std::string>> checkpoint_texts() const { return {}; }
};

struct TrainerOptions {
  std::string out_dir = "runs/train";
  bool resume = false;
  // Stop (with a checkpoint) once this many steps are done in total; 0: run to the end.
  int64_t stop_after_steps = 0;
  // false: no checkpoint is written (benchmarks).
  bool save_checkpoints = true;
  // Data-parallel training (distributed.h): set, the ranks start from rank 0's weights, sum
  // their gradients in buckets of `bucket_bytes` during the last micro-batch's backward, and
  // only rank 0 writes metrics and checkpoints. The task splits the data by rank and scales its
  // losses so that they add up over ranks to the step's loss.
  Communicator* communicator = nullptr;
  int64_t bucket_bytes = 25 << 20;
  // Called after each step's log line and before its evaluation, with the steps done
  // (benchmarks watch a stretch of steps with it).
  std::function<void(int64_t step)> after_step;
  // Whole-step CUDA graphs (graphed_step.h): "auto" records them where the run allows it (a
  // CUDA device, a task that stages its batches, one micro-batch, one process, no fp16 loss
  // scaling, the fused AdamW), "on" requires them (an error names what prevents them), "off"
  // launches every kernel from the host.
  std::string cuda_graph = "auto";
};

struct TrainerResult {
  int64_t steps = 0, total_steps = 0;
  double best_score = 0;
  bool reached_target = false;
  bool stopped_early = false;  // by stop_after_steps
  bool interrupted = false;    // by SIGINT or SIGTERM, after writing the checkpoint
  std::string checkpoint_dir;
  TaskEvaluation final_evaluation;  // not run when interrupted
};

// Trains into options.out_dir: metrics.jsonl (appended to on resume) and checkpoint/
// (model.safetensors, optimizer.safetensors, trainer_state.json, config.json). Throws
// lintime::Error for a resume without a checkpoint or with another config, and for an output
// directory that holds a checkpoint without --resume. SIGINT and SIGTERM (while it runs) end
// the step in progress, write the checkpoint and return with `interrupted` set.
TrainerResult train(TrainingTask& task, const OptimSettings& settings, const TrainerOptions& options);

}  // namespace lintime::train
