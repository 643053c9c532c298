// The MQAR training config (configs/mqar/*.toml): model, data segments and optimisation, read
// strictly (unknown keys and wrong types are errors) from the TOML/JSON document and written
// back as JSON into every checkpoint so `lintime eval` and `--resume` need nothing else.
#pragma once

#include "data/mqar.h"
#include "models/mqar_model.h"
#include "train/trainer.h"

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
