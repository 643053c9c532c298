// The MQAR training config (configs/mqar/*.toml): model, data segments and optimisation, read
// strictly (unknown keys and wrong types are errors) from the TOML/JSON document and written
// back as JSON into every checkpoint so `lintime eval` and `--resume` need nothing else.
#pragma once

#include "data/mqar.h"
#include "models/mqar_model.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace lintime::train {

struct MqarDataSettings {
  int64_t vocab_size = 8192;
  double power_a = 0.01;
  bool random_non_queries = false;
  uint64_t seed = 0;  // train examples use seed·2 + 1, test examples seed·2 + 2 (disjoint)
  std::vector<data::MqarSegmentConfig> train_segments;
  std::vector<data::MqarSegmentConfig> test_segments;
};

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
  double target_accuracy = 0.99;  // early stop once test accuracy reaches it; > 1 disables
  uint64_t seed = 0;              // model initialisation
};

struct MqarTrainConfig {
  models::MqarModelConfig model;
  MqarDataSettings data;
  OptimSettings optim;

  // Reads the document of a TOML config (tables model, data, train); throws lintime::Error.
  static MqarTrainConfig from_document(const nlohmann::json& document);
  // The same document form (from_document(to_document()) round-trips).
  nlohmann::json to_document() const;
  int64_t total_steps(int64_t batches_per_epoch) const;
};

// Reads CONFIG.toml, applies --set overrides, validates.
MqarTrainConfig load_mqar_train_config(const std::string& path, const std::vector<std::string>& overrides);

}  // namespace lintime::train
