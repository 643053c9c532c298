// Trains and evaluates an MQAR model (mqar.md §2): AdamW, the configured schedule, gradient
// clipping, evaluation every N steps with per-segment accuracy, early stop at the target
// accuracy, checkpoints that `resume` continues exactly (same batches, same optimizer state).
#pragma once

#include "data/mqar.h"
#include "models/mqar_model.h"
#include "train/mqar_config.h"
#include "train/trainer.h"

#include <c10/core/Device.h>

#include <string>
#include <vector>

namespace lintime::train {

// The trainer's options and the device. Distributed (TrainerOptions::communicator): each rank
// takes its share of every step's batch rows.
struct MqarTrainOptions : TrainerOptions {
  MqarTrainOptions() { out_dir = "runs/mqar"; }
  std::string device = "auto";
};

struct MqarEvaluation {
  double accuracy = 0;                   // mean over test examples
  std::vector<double> segment_accuracy;  // per test segment
  std::vector<std::string> segment_names;
  int64_t examples = 0;
};

struct MqarTrainResult {
  MqarEvaluation evaluation;  // of the final model
  double best_accuracy = 0;
  int64_t steps = 0;
  int64_t total_steps = 0;
  bool reached_target = false;
  bool stopped_early = false;  // stop_after_steps
  bool interrupted = false;    // by SIGINT/SIGTERM, after the checkpoint (no final evaluation)
  std::string checkpoint_dir;
  double wall_seconds = 0;     // this invocation
  int64_t parameters = 0;
  int64_t state_bytes_per_sequence = 0;
  double lr = 0;
  std::string device;
};

MqarEvaluation evaluate_mqar(models::MqarModel& model, const data::MqarDataset& test,
                             const c10::Device& device);

// Trains into options.out_dir: metrics.jsonl, checkpoint/ (model.safetensors,
// optimizer.safetensors, trainer_state.json, config.json), result.json.
MqarTrainResult train_mqar(const MqarTrainConfig& config, const MqarTrainOptions& options);

// Loads out_dir/checkpoint (or a checkpoint dir itself) and evaluates it on its test segments.
MqarEvaluation evaluate_mqar_checkpoint(const std::string& dir, const std::string& device,
                                        MqarTrainConfig* config_out = nullptr);

// The datasets of a config (train seed data.seed·2+1, test data.seed·2+2).
data::MqarDataset make_train_dataset(const MqarTrainConfig& config);
data::MqarDataset make_test_dataset(const MqarTrainConfig& config);

}  // namespace lintime::train
