// MQAR model, its config and the sequence-mixer registry (see mqar_model.h).
#include "models/mqar_model.h"

#include "core/config_reader.h"
#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <utility>

namespace lintime::models {

using nlohmann::json;

json MqarModelConfig::options_for(const std::string& mixer) const {
  if (mixer_options.is_object() && mixer_options.contains(mixer)) return mixer_options.at(mixer);
  return json::object();
}

void MqarModelConfig::validate() const {
  // Named by the training config's keys ([model] of configs/mqar/*.toml).
  LINTIME_CHECK(vocab_size >= 2, "config key \"data.vocab_size\": must be >= 2, got ", vocab_size);
  LINTIME_CHECK(d_model >= 1, "config key \"model.d_model\": must be >= 1, got ", d_model);
  config::check_size("data.vocab_size", vocab_size, config::size_limits::kVocabulary);
  config::check_size("model.d_model", d_model, config::size_limits::kWidth);
  LINTIME_CHECK(!layers.empty(), "config key \"model.layers\": must list at least one sequence mixer (known: ",
                config::join(mixer_names()), ")");
  LINTIME_CHECK(static_cast<int64_t>(layers.size()) <= config::size_limits::kLayers, "config key \"model.layers\": lists ",
                layers.size(), " mixers; expected at most ", config::size_limits::kLayers);
  const std::vector<std::string> known = mixer_names();
  for (size_t i = 0; i < layers.size(); ++i) {
    LINTIME_CHECK(std::find(known.begin(), known.end(), layers[i]) != known.end(), "config key \"model.layers[", i,
                  "]\": unknown sequence mixer \"", layers[i], "\"; known mixers: ", config::join(known));
  }
  LINTIME_CHECK(mixer_options.is_object(), "config key \"model\": the mixers' option tables must be keyed by mixer name, got ",
                mixer_options.dump());
  for (const auto& [name, options] : mixer_options.items()) {
    LINTIME_CHECK(std::find(known.begin(), known.end(), name) != known.end(), "config key \"model.", name,
                  "\": options for an unknown sequence mixer; known mixers: ", config::join(known));
  }
  LINTIME_CHECK(std::isfinite(norm_eps) && norm_eps >= 0.0, "config key \"model.norm_eps\": must be finite and >= 0, got ", norm_eps);
  LINTIME_CHECK(std::isfinite(initializer_range) && initializer_range > 0.0, "config key \"model.initializer_range\": ",
                "must be finite and > 0, got ", initializer_range);
  LINTIME_CHECK(embed_dropout >= 0.0 && embed_dropout < 1.0, "config key \"model.embed_dropout\": must lie in [0, 1), got ",
                embed_dropout);
  for (const std::string& name : std::set<std::string>(layers.begin(), layers.end())) {
    mixer_parameter_count(name, d_model, options_for(name));  // validates the options
  }
}

int64_t MqarModelConfig::parameter_count() const {
  validate();
  int64_t count = vocab_size * d_model + 2 * d_model;  // tied embedding, final LayerNorm
  for (const std::string& name : layers) {
    count += 4 * d_model + mixer_parameter_count(name, d_model, options_for(name));  // norm1, norm2, mixer
  }
  return count;
}

int64_t MqarModelConfig::state_bytes_per_sequence() const {
  validate();
  int64_t bytes = 0;
  for (const std::string& name : layers) bytes += mixer_state_bytes_per_sequence(name, d_model, options_for(name));
  return bytes;
}

void to_json(json& out, const MqarModelConfig& config) {
  out = json{{"vocab_size", config.vocab_size},         {"d_model", config.d_model},
             {"layers", config.layers},                 {"mixer_options", config.mixer_options},
             {"norm_eps", config.norm_eps},             {"initializer_range", config.initializer_range},
             {"embed_dropout", config.embed_dropout}};
}

void from_json(const json& in, MqarModelConfig& config) {
  // The keys of [model] in a training config (checkpoints store the same document).
  config::StrictObject fields(in, "model",
                              {"vocab_size", "d_model", "layers", "mixer_options", "norm_eps", "initializer_range",
                               "embed_dropout"});
  MqarModelConfig result;
  result.vocab_size = fields.get("vocab_size", result.vocab_size);
  result.d_model = fields.get("d_model", result.d_model);
  result.norm_eps = fields.get("norm_eps", result.norm_eps);
  result.initializer_range = fields.get("initializer_range", result.initializer_range);
  result.embed_dropout = fields.get("embed_dropout", result.embed_dropout);
  if (fields.has("layers")) {
    const json layers = fields.get_raw("layers");
    bool strings = layers.is_array();
    for (const json& item : layers) strings = strings && item.is_string();
    if (!strings) config::wrong_type(fields.key_path("layers"), "an array of mixer names", layers);
    result.layers = layers.get<std::vector<std::string>>();
  }
  if (in.contains("mixer_options")) result.mixer_options = in.at("mixer_options");
  result.validate();
  config = std::move(result);
}


DecoderConfig mqar_decoder_config(const MqarModelConfig& config) {
  config.validate();
  DecoderConfig result;
  result.description = "MQAR model (zoology)";
  result.vocab_size = config.vocab_size;
  result.hidden_size = config.d_model;
  for (const std::string& name : config.layers) result.layers.push_back({name, config.options_for(name)});
  result.norm = "layer";
  result.mlp = "identity";
  result.norm_eps = config.norm_eps;
  result.initializer_range = config.initializer_range;
  result.tie_word_embeddings = true;
  result.embed_dropout = config.embed_dropout;
  result.names = {"backbone", "embeddings.word_embeddings", "norm1", "sequence_mixer", "norm2", "state_mixer", "ln_f"};
  return result;
}

MqarModel::MqarModel(const MqarModelConfig& config, uint64_t seed)
    : MqarModel(config, at::make_generator<at::CPUGeneratorImpl>(seed)) {}

MqarModel::MqarModel(const MqarModelConfig& config, at::Generator generator)
    : Decoder(mqar_decoder_config(config), generator), config_(config) {}

void MqarModel::check_inputs(const at::Tensor& inputs) const {
  LINTIME_CHECK(inputs.defined() && inputs.dim() == 2 && inputs.scalar_type() == at::kLong,
                "MqarModel: inputs must be an int64 tensor of shape [B, L]");
  if (inputs.numel() > 0) {
    const int64_t low = inputs.min().item<int64_t>(), high = inputs.max().item<int64_t>();
    LINTIME_CHECK(low >= 0 && high < config_.vocab_size, "MqarModel: inputs must be token ids in [0, ",
                  config_.vocab_size, "), got values in [", low, ", ", high, "]");
  }
}

at::Tensor MqarModel::forward(const at::Tensor& inputs, bool training) {
  // The id range of host inputs is checked by the decoder (callers check GPU batches on the host).
  LINTIME_CHECK(inputs.defined() && inputs.dim() == 2 && inputs.scalar_type() == at::kLong,
                "MqarModel: inputs must be an int64 tensor of shape [B, L]");
  model.set_training(training);
  return at::linear(hidden_states(inputs), model.embeddings.weight);  // [B, L, V] in the parameters' dtype
}

at::Tensor MqarModel::logits_at(const at::Tensor& inputs, const at::Tensor& positions, bool training) {
  LINTIME_CHECK(inputs.defined() && inputs.dim() == 2 && inputs.scalar_type() == at::kLong,
                "MqarModel: inputs must be an int64 tensor of shape [B, L]");
  LINTIME_CHECK(positions.defined() && positions.dim() == 1 && positions.scalar_type() == at::kLong,
                "MqarModel: positions must be an int64 tensor of shape [P]");
  model.set_training(training);
  const at::Tensor hidden = hidden_states(inputs);                                   // [B, L, d]
  const at::Tensor rows = hidden.reshape({-1, hidden.size(-1)}).index_select(0, positions);  // [P, d]
  return at::linear(rows, model.embeddings.weight);  // [P, V] in the parameters' dtype
}

bool MqarModel::training_is_replayable() const {
  for (const auto& block : model.layers)
    if (!block->mixer->training_is_replayable()) return false;
  return true;
}

int64_t MqarModel::state_bytes_per_sequence() const {
  int64_t bytes = 0;
  for (const auto& block : model.layers) bytes += block->mixer->state_bytes_per_sequence();
  return bytes;
}

Mixer& MqarModel::mixer(int64_t layer) {
  LINTIME_CHECK(layer >= 0 && layer < num_layers(), "MqarModel: layer must be in [0, ", num_layers(), "), got ", layer);
  return *model.layers[static_cast<size_t>(layer)]->mixer;
}

}  // namespace lintime::models
