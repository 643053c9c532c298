// MQAR model, its config and the sequence-mixer registry (see mqar_model.h).
#include "models/mqar_model.h"

#include "core/config_reader.h"
#include "core/error.h"
#include "layers/base_conv.h"
#include "layers/based_linear_attention.h"
#include "layers/gated_linear_attention.h"
#include "layers/gated_slot_attention.h"
#include "layers/softmax_attention.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <utility>

namespace lintime::models {
namespace {

using nlohmann::json;

// Adapts a layer with forward(x) and state_bytes_per_sequence() to SequenceMixer.
template <typename Layer>
class LayerMixer final : public SequenceMixer {
 public:
  template <typename... Args>
  explicit LayerMixer(Args&&... args) : layer_(std::forward<Args>(args)...) {}
  at::Tensor forward(const at::Tensor& x) override { return layer_.forward(x); }
  int64_t state_bytes_per_sequence() const override { return layer_.state_bytes_per_sequence(); }
  layers::Module& module() override { return layer_; }

 private:
  Layer layer_;
};

// "gsa": fla's GatedSlotAttention with the GSA paper's MQAR settings.
layers::GatedSlotAttentionOptions gsa_options(int64_t d_model, const json& options, double init_std) {
  config::StrictObject reader(options, "model.gsa",
                      {"num_heads", "num_kv_heads", "num_slots", "expand_k", "expand_v", "gate_logit_normalizer",
                       "scale", "feature_map", "use_short_conv", "conv_size", "elementwise_affine", "norm_eps"});
  layers::GatedSlotAttentionOptions result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 4);
  if (reader.has("num_kv_heads")) result.num_kv_heads = reader.get_as<int64_t>("num_kv_heads", 0);
  result.num_slots = reader.get_as<int64_t>("num_slots", d_model / 4);
  result.expand_k = reader.get_as<double>("expand_k", 1.0);
  result.expand_v = reader.get_as<double>("expand_v", 1.0);
  result.gate_logit_normalizer = reader.get_as<double>("gate_logit_normalizer", 16.0);
  result.feature_map = reader.get_as<std::string>("feature_map", "swish");
  result.use_short_conv = reader.get_as<bool>("use_short_conv", false);
  result.conv_size = reader.get_as<int64_t>("conv_size", 4);
  result.elementwise_affine = reader.get_as<bool>("elementwise_affine", true);
  result.norm_eps = reader.get_as<double>("norm_eps", 1e-5);
  result.initializer_range = init_std;
  const auto key_dim = static_cast<int64_t>(static_cast<double>(d_model) * result.expand_k);
  if (reader.has("scale")) {
    result.scale = reader.get_as<double>("scale", 1.0);
  } else if (result.num_heads > 0 && key_dim >= result.num_heads) {
    result.scale = 1.0 / std::sqrt(static_cast<double>(key_dim / result.num_heads));  // head_k_dim^-0.5
  }
  return result;
}

// "gla": GatedLinearAttention, 2 heads by default (the GSA paper's baseline).
layers::GatedLinearAttentionOptions gla_options(int64_t d_model, const json& options, double init_std) {
  config::StrictObject reader(options, "model.gla",
                      {"num_heads", "expand_k", "expand_v", "gate_low_rank_dim", "gate_logit_normalizer",
                       "use_output_gate", "norm_eps", "scale"});
  layers::GatedLinearAttentionOptions result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 2);
  result.expand_k = reader.get_as<double>("expand_k", 0.5);
  result.expand_v = reader.get_as<double>("expand_v", 1.0);
  result.gate_low_rank_dim = reader.get_as<int64_t>("gate_low_rank_dim", 16);
  result.gate_logit_normalizer = reader.get_as<double>("gate_logit_normalizer", 16.0);
  result.use_output_gate = reader.get_as<bool>("use_output_gate", true);
  result.norm_eps = reader.get_as<double>("norm_eps", 1e-5);
  if (reader.has("scale")) result.scale = reader.get_as<double>("scale", 1.0);
  result.initializer_range = init_std;
  return result;
}

// "base_conv": zoology's BaseConv.
int64_t base_conv_kernel_size(const json& options) {
  config::StrictObject reader(options, "model.base_conv", {"kernel_size"});
  const auto kernel_size = reader.get_as<int64_t>("kernel_size", 3);
  LINTIME_CHECK(kernel_size >= 1, "config key \"model.base_conv.kernel_size\": must be >= 1, got ", kernel_size);
  return kernel_size;
}

// "based" (BASED's Taylor linear attention, zoology's Based mixer) and "linear_attention" (the
// same layer with a chosen feature map: zoology's baselines).
layers::BasedLinearAttentionOptions linear_attention_layer_options(const char* mixer, bool feature_map_option,
                                                                   int64_t d_model, const json& options,
                                                                   double init_std) {
  std::vector<std::string> known = {"feature_dim", "num_heads", "normalize", "eps"};
  if (feature_map_option) known.insert(known.begin(), "feature_map");
  config::StrictObject reader(options, "model." + std::string(mixer), known);
  layers::BasedLinearAttentionOptions result;
  result.hidden_size = d_model;
  if (feature_map_option) result.feature_map = reader.get_as<std::string>("feature_map", "taylor");
  result.feature_dim = reader.get_as<int64_t>("feature_dim", 16);
  result.num_heads = reader.get_as<int64_t>("num_heads", 1);
  result.normalize = reader.get_as<bool>("normalize", true);
  result.eps = reader.get_as<double>("eps", 1e-12);
  result.initializer_range = init_std;
  return result;
}
layers::BasedLinearAttentionOptions based_options(int64_t d_model, const json& options, double init_std) {
  return linear_attention_layer_options("based", false, d_model, options, init_std);
}
layers::BasedLinearAttentionOptions linear_attention_options(int64_t d_model, const json& options, double init_std) {
  return linear_attention_layer_options("linear_attention", true, d_model, options, init_std);
}

// "attention" and "sliding_window": causal softmax attention, full or over the last `window` keys.
layers::SoftmaxAttentionOptions attention_options(const char* mixer, int64_t d_model, const json& options,
                                                  double init_std) {
  const bool sliding = std::string(mixer) == "sliding_window";
  config::StrictObject reader(options, "model." + std::string(mixer),
                      sliding ? std::vector<std::string>{"window", "num_heads"}
                              : std::vector<std::string>{"num_heads", "counted_length"});
  layers::SoftmaxAttentionOptions result;
  result.hidden_size = d_model;
  result.num_heads = reader.get_as<int64_t>("num_heads", 1);
  if (sliding) {
    result.window = reader.get_as<int64_t>("window", 64);
    LINTIME_CHECK(result.window >= 1, "config key \"model.sliding_window.window\": must be >= 1 (keys seen per query, itself "
                  "included), got ", result.window);
  } else {
    result.counted_length = reader.get_as<int64_t>("counted_length", 1024);
  }
  result.initializer_range = init_std;
  return result;
}

struct MixerEntry {
  const char* name;
  std::unique_ptr<SequenceMixer> (*make)(int64_t d_model, const json& options, at::Generator& generator,
                                         double init_std);
  int64_t (*parameter_count)(int64_t d_model, const json& options);
  int64_t (*state_bytes)(int64_t d_model, const json& options);
};

// The entry of a mixer whose layer is built from (options, generator) and counts its parameters
// and state from the options alone; kOptions(d_model, options, init_std) parses the options.
template <class Layer, auto kOptions>
MixerEntry layer_entry(const char* name) {
  return {name,
          [](int64_t d, const json& o, at::Generator& g, double std) -> std::unique_ptr<SequenceMixer> {
            return std::make_unique<LayerMixer<Layer>>(kOptions(d, o, std), g);
          },
          [](int64_t d, const json& o) { return Layer::parameter_count_for(kOptions(d, o, 0.02)); },
          [](int64_t d, const json& o) { return Layer::state_bytes_per_sequence(kOptions(d, o, 0.02)); }};
}

layers::SoftmaxAttentionOptions sliding_window_options(int64_t d_model, const json& options, double init_std) {
  return attention_options("sliding_window", d_model, options, init_std);
}
layers::SoftmaxAttentionOptions full_attention_options(int64_t d_model, const json& options, double init_std) {
  return attention_options("attention", d_model, options, init_std);
}

// The registry: one entry per mixer. A new mixer adds its options parser above and one entry.
const std::vector<MixerEntry>& registry() {
  static const std::vector<MixerEntry> entries = {
      layer_entry<layers::GatedSlotAttention, gsa_options>("gsa"),
      layer_entry<layers::GatedLinearAttention, gla_options>("gla"),
      {"base_conv",
       [](int64_t d, const json& o, at::Generator& g, double std) -> std::unique_ptr<SequenceMixer> {
         return std::make_unique<LayerMixer<layers::BaseConv>>(d, base_conv_kernel_size(o), std, g);
       },
       [](int64_t d, const json& o) { return layers::BaseConv::parameter_count_for(d, base_conv_kernel_size(o)); },
       [](int64_t d, const json& o) { return layers::BaseConv::state_bytes_per_sequence(d, base_conv_kernel_size(o)); }},
      layer_entry<layers::BasedLinearAttention, based_options>("based"),
      layer_entry<layers::BasedLinearAttention, linear_attention_options>("linear_attention"),
      layer_entry<layers::SoftmaxAttention, sliding_window_options>("sliding_window"),
      layer_entry<layers::SoftmaxAttention, full_attention_options>("attention"),
  };
  return entries;
}

const MixerEntry& find_mixer(const std::string& name) {
  for (const MixerEntry& entry : registry()) {
    if (name == entry.name) return entry;
  }
  fail("unknown sequence mixer \"", name, "\"; known mixers: ", config::join(mixer_names()));
}

void check_d_model(int64_t d_model) {
  LINTIME_CHECK(d_model >= 1, "d_model must be >= 1, got ", d_model);
}

}  // namespace

std::vector<std::string> mixer_names() {
  std::vector<std::string> names;
  for (const MixerEntry& entry : registry()) names.emplace_back(entry.name);
  return names;
}

std::unique_ptr<SequenceMixer> make_mixer(const std::string& name, int64_t d_model, const json& options,
                                          at::Generator& generator, double init_std) {
  const MixerEntry& entry = find_mixer(name);
  check_d_model(d_model);
  return entry.make(d_model, options, generator, init_std);
}

int64_t mixer_parameter_count(const std::string& name, int64_t d_model, const json& options) {
  const MixerEntry& entry = find_mixer(name);
  check_d_model(d_model);
  return entry.parameter_count(d_model, options);
}

int64_t mixer_state_bytes_per_sequence(const std::string& name, int64_t d_model, const json& options) {
  const MixerEntry& entry = find_mixer(name);
  check_d_model(d_model);
  return entry.state_bytes(d_model, options);
}


json MqarModelConfig::options_for(const std::string& mixer) const {
  if (mixer_options.is_object() && mixer_options.contains(mixer)) return mixer_options.at(mixer);
  return json::object();
}

void MqarModelConfig::validate() const {
  const char* who = "mqar model config";
  LINTIME_CHECK(vocab_size >= 2, who, ": vocab_size must be >= 2, got ", vocab_size);
  LINTIME_CHECK(d_model >= 1, who, ": d_model must be >= 1, got ", d_model);
  LINTIME_CHECK(!layers.empty(), who, ": layers must list at least one sequence mixer (known: ",
                config::join(mixer_names()), ")");
  const std::vector<std::string> known = mixer_names();
  for (size_t i = 0; i < layers.size(); ++i) {
    LINTIME_CHECK(std::find(known.begin(), known.end(), layers[i]) != known.end(), who, ": layers[", i,
                  "]: unknown sequence mixer \"", layers[i], "\"; known mixers: ", config::join(known));
  }
  LINTIME_CHECK(mixer_options.is_object(), who, ": mixer_options must be a JSON object keyed by mixer name, got ",
                mixer_options.dump());
  for (const auto& [name, options] : mixer_options.items()) {
    LINTIME_CHECK(std::find(known.begin(), known.end(), name) != known.end(), who, ": mixer_options: unknown sequence mixer \"",
                  name, "\"; known mixers: ", config::join(known));
  }
  LINTIME_CHECK(std::isfinite(norm_eps) && norm_eps >= 0.0, who, ": norm_eps must be finite and >= 0, got ", norm_eps);
  LINTIME_CHECK(std::isfinite(initializer_range) && initializer_range > 0.0, who,
                ": initializer_range must be finite and > 0, got ", initializer_range);
  LINTIME_CHECK(embed_dropout >= 0.0 && embed_dropout < 1.0, who, ": embed_dropout must lie in [0, 1), got ",
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


class MqarModel::Block : public layers::Module {
 public:
  Block(const std::string& mixer_name, const MqarModelConfig& config, at::Generator& generator)
      : norm1(config.d_model, config.norm_eps),
        mixer(make_mixer(mixer_name, config.d_model, config.options_for(mixer_name), generator,
                         config.initializer_range)),
        norm2(config.d_model, config.norm_eps) {
    register_module("norm1", norm1);
    register_module("sequence_mixer", mixer->module());
    register_module("norm2", norm2);
  }

  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor mixed = x + mixer->forward(norm1.forward(x));
    return mixed + norm2.forward(mixed);  // identity state mixer
  }

  layers::LayerNorm norm1;
  std::unique_ptr<SequenceMixer> mixer;
  layers::LayerNorm norm2;
};

namespace {
const MqarModelConfig& validated(const MqarModelConfig& config) {
  config.validate();
  return config;
}
}  // namespace

MqarModel::MqarModel(const MqarModelConfig& config, uint64_t seed)
    : config_(validated(config)), ln_f_(config.d_model, config.norm_eps) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  embedding = at::empty({config_.vocab_size, config_.d_model}, at::kFloat);
  embedding.normal_(0.0, config_.initializer_range, generator);
  register_parameter("backbone.embeddings.word_embeddings.weight", embedding);
  for (size_t i = 0; i < config_.layers.size(); ++i) {
    blocks_.push_back(std::make_unique<Block>(config_.layers[i], config_, generator));
    register_module("backbone.layers." + std::to_string(i), *blocks_.back());
  }
  register_module("backbone.ln_f", ln_f_);
}

MqarModel::~MqarModel() = default;

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
  if (inputs.defined() && inputs.device().is_cpu()) {
    check_inputs(inputs);
  } else {
    LINTIME_CHECK(inputs.defined() && inputs.dim() == 2 && inputs.scalar_type() == at::kLong,
                  "MqarModel: inputs must be an int64 tensor of shape [B, L]");
  }
  at::Tensor x = at::embedding(embedding, inputs);  // [B, L, d]
  if (training && config_.embed_dropout > 0) x = at::dropout(x, config_.embed_dropout, /*train=*/true);
  for (auto& block : blocks_) x = block->forward(x);
  return at::linear(ln_f_.forward(x), embedding);  // [B, L, V], tied head
}

int64_t MqarModel::state_bytes_per_sequence() const {
  int64_t bytes = 0;
  for (const auto& block : blocks_) bytes += block->mixer->state_bytes_per_sequence();
  return bytes;
}

SequenceMixer& MqarModel::mixer(int64_t layer) {
  LINTIME_CHECK(layer >= 0 && layer < num_layers(), "MqarModel: layer must be in [0, ", num_layers(), "), got ", layer);
  return *blocks_[layer]->mixer;
}

}  // namespace lintime::models
