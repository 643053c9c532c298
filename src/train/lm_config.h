// The language-model training config (configs/lm/*.toml, `task = "lm"`): the model (a
// config.json of any registered architecture, trained from fresh weights, or a model folder to
// finetune), the token shards written by `lintime tokenize`, and the optimisation. Read
// strictly (unknown keys and wrong types are errors) and written back as one self-contained
// JSON document (the model's config inline) into every checkpoint, so `--resume` needs nothing
// else. Relative paths are read from the current directory.
#pragma once

#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lintime::train {

struct LmModelSettings {
  nlohmann::json config;    // config.json of the model (from `config`, or the folder's)
  std::string config_path;  // where it came from (messages), "" for an inline table
  std::string from;         // a model folder whose weights start the training ("": fresh weights)
};

struct LmDataSettings {
  std::string shards;  // a `lintime tokenize` directory (manifest.json, train and val splits)
  int64_t seq_len = 512;
  bool document_boundaries = true;  // pack documents with cu_seqlens (fla's varlen training)
  uint64_t seed = 0;                // order of the training windows
};

struct LmTrainConfig {
  LmModelSettings model;
  LmDataSettings data;
  OptimSettings optim;
  int64_t batch_tokens = 16384;     // tokens per optimizer step, all micro-batches together
  int64_t micro_batch_rows = 8;     // rows of seq_len tokens per forward and backward
  // "auto": bf16 on a GPU, fp32 on a CPU; else as OptimSettings::precision.
  std::string precision = "auto";
  int64_t activation_checkpointing = 0;  // every k-th block (0: none, 1: every block)
  int64_t loss_chunk_tokens = 4096;      // tokens per chunk of the cross-entropy's logits
  int64_t eval_tokens = 262144;          // validation tokens per evaluation (the split's first windows)

  static LmTrainConfig from_document(const nlohmann::json& document);
  nlohmann::json to_document() const;
  int64_t rows_per_step() const { return batch_tokens / data.seq_len; }
  int64_t micro_batches() const { return rows_per_step() / micro_batch_rows; }
};

// Reads CONFIG.toml (with `task = "lm"`), applies --set overrides, validates.
LmTrainConfig load_lm_train_config(const std::string& path, const std::vector<std::string>& overrides);

// The task named by a training config document: its "task" key ("mqar" when absent).
std::string training_task_of(const nlohmann::json& document, const std::string& where);

}  // namespace lintime::train
