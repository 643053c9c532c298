// Training checkpoints: one directory holding
//   model.safetensors      weights under Module::named_parameters names
//   optimizer.safetensors  AdamW moments and per-parameter steps (when an optimizer is given)
//   trainer_state.json     step, epoch, data position, best score, RNG state, step count
//   config.json            the run's configuration, or the model's config.json when the
//                          checkpoint is a model folder (the run's is then train_config.json)
//   other files            copied in (a language model's tokenizer)
// Saving writes a sibling "<dir>.tmp" and swaps it in with renames ("<dir>" -> "<dir>.old",
// "<dir>.tmp" -> "<dir>", then "<dir>.old" is deleted), so "<dir>" is always either the old
// or the new complete checkpoint; after a crash between the two renames, loading falls back
// to "<dir>.old". Loading validates every tensor before it changes the model or optimizer.
#pragma once

#include "layers/module.h"
#include "train/adamw.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lintime::train {

struct TrainerState {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t data_position = 0;  // samples (or batches) consumed in the current epoch
  double best_score = 0.0;  // the best evaluation score so far (MQAR: test accuracy)
  nlohmann::json rng = nlohmann::json::object();     // seed / generator state, as the trainer keeps it
  nlohmann::json config = nlohmann::json::object();  // stored as config.json
  // Free-form trainer bookkeeping that must resume with the run (last accuracy, flags, ...).
  nlohmann::json progress = nlohmann::json::object();
};

// What a checkpoint holds beside trainer_state.json.
struct CheckpointContents {
  std::vector<std::pair<std::string, at::Tensor>> weights;  // model.safetensors, under these names
  const AdamW* optimizer = nullptr;                          // optimizer.safetensors when given
  // Or the optimizer state as AdamW::state_tensors would give it, with its step count (an
  // optimizer whose state is spread over ranks gathers it first).
  std::vector<std::pair<std::string, at::Tensor>> optimizer_tensors;
  int64_t optimizer_step_count = -1;  // >= 0: optimizer_tensors are the optimizer state
  // Set: the model's config.json, so that the checkpoint is also a model folder (lintime's
  // commands, fla and Hugging Face load it); the run's config then goes to train_config.json.
  nlohmann::json model_config;
  // Files copied in beside them: (source path, name in the checkpoint), e.g. the tokenizer's.
  std::vector<std::pair<std::string, std::string>> files;
  // Files written beside them: (name in the checkpoint, contents), e.g. tokenizer_config.json.
  std::vector<std::pair<std::string, std::string>> texts;
};

// Writes the checkpoint atomically (see above). Throws lintime::Error; on failure an existing
// checkpoint at `dir` is left as it was.
void save_checkpoint(const std::string& dir, const CheckpointContents& contents, const TrainerState& state);
// The model's parameters under their names; `optimizer` may be null.
void save_checkpoint(const std::string& dir, const layers::Module& model, const AdamW* optimizer,
                     const TrainerState& state);

// Loads weights into `model` (copied in place, converted to each parameter's dtype/device) and,
// when `optimizer` is given, its state. Throws lintime::Error naming missing, unexpected or
// wrong-shape tensors; nothing is modified unless everything validates.
TrainerState load_checkpoint(const std::string& dir, layers::Module& model, AdamW* optimizer = nullptr);

// Loads the optimizer state alone (validated before anything changes).
void load_optimizer_state(const std::string& dir, AdamW& optimizer);

// optimizer.safetensors as named tensors, and the optimizer's step count.
std::map<std::string, at::Tensor> read_optimizer_tensors(const std::string& dir, int64_t* step_count);

// Reads trainer_state.json and the run's config (train_config.json, else config.json) only.
TrainerState read_trainer_state(const std::string& dir);

// True when `dir` (or its "<dir>.old" fallback) holds a complete checkpoint.
bool checkpoint_exists(const std::string& dir);

}  // namespace lintime::train
