// The MQAR model of zoology (docs/mqar.md §2), a configuration of the decoder stack
// (models/decoder.h): token embedding N(0, initializer_range), a list of pre-norm blocks, a
// final LayerNorm and an LM head tied to the embedding; no positional embedding. Each block is zoology's TransformerBlock with an identity state mixer:
//   x ← x + sequence_mixer(norm1(x))
//   x ← x + norm2(x)                  (the identity "state mixer" still has its pre-norm and
//                                      residual in zoology, so norm2 stays)
// Sequence mixers are chosen per layer by name from the mixer registry that the language models
// share (models/mixer.h): "gsa", "gla", "base_conv", "based", "linear_attention",
// "sliding_window", "attention", "gqa".
// Parameter names follow zoology at the model level ("backbone.embeddings.word_embeddings.weight",
// "backbone.layers.{i}.norm1.weight", "backbone.layers.{i}.sequence_mixer.…",
// "backbone.ln_f.weight") and the layers' own (fla) names inside a mixer.
#pragma once

#include "models/decoder.h"
#include "models/mixer.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lintime::models {

struct MqarModelConfig {
  int64_t vocab_size = 8192;
  int64_t d_model = 128;
  // The sequence mixer of each block, first to last; its size is the number of layers.
  // GSA paper setting: 4 × "gsa"; zoology / BASED protocol: {"base_conv", mixer}.
  std::vector<std::string> layers = {"gsa", "gsa", "gsa", "gsa"};
  // Options per mixer name, e.g. {"gsa": {"num_slots": 32}, "base_conv": {"kernel_size": 3}};
  // every layer with that mixer uses them.
  nlohmann::json mixer_options = nlohmann::json::object();
  double norm_eps = 1e-5;
  double initializer_range = 0.02;
  // Dropout on the token embeddings while training (zoology's embed_dropout: 0.1 in its
  // ModelConfig, which the papers' MQAR runs keep); 0 turns it off.
  double embed_dropout = 0.0;

  // Throws lintime::Error (one line naming the field) on bad values, unknown mixer names and
  // bad mixer options.
  void validate() const;
  // Parameters (tied head counted once) and state bytes per sequence, without building.
  int64_t parameter_count() const;
  int64_t state_bytes_per_sequence() const;
  // The options object of one mixer name (an empty object when absent).
  nlohmann::json options_for(const std::string& mixer) const;
};

// Keys as the struct fields; from_json rejects unknown keys and validates.
void to_json(nlohmann::json& json, const MqarModelConfig& config);
void from_json(const nlohmann::json& json, MqarModelConfig& config);

// The decoder of this config (validated): zoology's names, LayerNorms, identity MLPs, tied head.
DecoderConfig mqar_decoder_config(const MqarModelConfig& config);

class MqarModel : public Decoder {
 public:
  // Validates the config; initialises every weight deterministically from `seed` (CPU, fp32).
  MqarModel(const MqarModelConfig& config, uint64_t seed);

  // inputs [B, L] int64 token ids in [0, vocab_size) -> logits [B, L, vocab_size] in the
  // parameters' dtype. `training` applies the embedding dropout (config.embed_dropout), drawn
  // from the default generator of the inputs' device. The id range is checked for host inputs
  // only: on a GPU the check would wait for the device at every step, so callers that move
  // batches there check them first (check_inputs on the host batch, as the trainer does).
  at::Tensor forward(const at::Tensor& inputs, bool training = false);
  // The logits [P, vocab_size] at `positions` [P] only (flat indices into B·L, on the inputs'
  // device; data::mqar_labelled): the rows of forward()'s logits there, without the head's
  // product and the vocabulary-wide tensor at the other positions.
  at::Tensor logits_at(const at::Tensor& inputs, const at::Tensor& positions, bool training = false);
  // Throws lintime::Error unless `inputs` is an int64 [B, L] tensor of ids in [0, vocab_size).
  void check_inputs(const at::Tensor& inputs) const;

  // Whether every mixer's training step can be recorded as a CUDA graph (Mixer::training_is_replayable).
  bool training_is_replayable() const;
  // Sum over layers of each mixer's recurrent state, bytes per sequence.
  int64_t state_bytes_per_sequence() const;
  const MqarModelConfig& config() const { return config_; }
  int64_t num_layers() const { return static_cast<int64_t>(model.layers.size()); }
  Mixer& mixer(int64_t layer);

 private:
  MqarModel(const MqarModelConfig& config, at::Generator generator);
  MqarModelConfig config_;
};

}  // namespace lintime::models
