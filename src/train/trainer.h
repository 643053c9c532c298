// The training loop, independent of the task (issue 18's "one trainer with tasks"): the
// schedule's learning rate, AdamW, gradient clipping, JSON-lines metrics and a progress bar,
// evaluation every N steps with early stop at a target score, atomic checkpoints and exact
// resume. A task supplies the model, the loss of step s's batch (a pure function of s, so a
// resumed run repeats the uninterrupted one) and the evaluation; MQAR is the first task
// (mqar_trainer.h).
#pragma once

#include "layers/module.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lintime::train {

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
  int64_t eval_every = 0;  // steps; 0: at the end of every epoch
  int64_t checkpoint_every = 0;  // steps; 0: at every evaluation
  int64_t log_every = 10;
  // Early stop once the task's evaluation score reaches it (MQAR: test accuracy; > 1 disables).
  double target_accuracy = 0.99;
  uint64_t seed = 0;              // model initialisation
};

struct TaskEvaluation {
  nlohmann::json record;  // one metrics.jsonl line (the trainer adds "step" and "eval": true)
  double score = 0;       // higher is better; early stop at OptimSettings::target_accuracy
  std::string summary;    // for the progress output: "test accuracy 0.953"
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
  // The loss of step `step`'s batch in training mode; `tokens` receives the batch's token count.
  virtual at::Tensor training_loss(int64_t step, int64_t* tokens) = 0;
  virtual TaskEvaluation evaluate() = 0;
  // The score's name on the progress bar ("acc").
  virtual const char* score_name() const { return "score"; }
};

struct TrainerOptions {
  std::string out_dir = "runs/train";
  bool resume = false;
  // Stop (with a checkpoint) once this many steps are done in total; 0: run to the end.
  int64_t stop_after_steps = 0;
};

struct TrainerResult {
  int64_t steps = 0, total_steps = 0;
  double best_score = 0;
  bool reached_target = false;
  bool stopped_early = false;  // by stop_after_steps
  TaskEvaluation final_evaluation;
};

// Trains into options.out_dir: metrics.jsonl (appended to on resume) and checkpoint/
// (model.safetensors, optimizer.safetensors, trainer_state.json, config.json). Throws
// lintime::Error for a resume without a checkpoint or with another config, and for an output
// directory that holds a checkpoint without --resume.
TrainerResult train(TrainingTask& task, const OptimSettings& settings, const TrainerOptions& options);

}  // namespace lintime::train
