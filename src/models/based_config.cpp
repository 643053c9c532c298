// Parsing HazyResearch's BASED config.json (see the header).
#include "models/based_config.h"

#include "core/error.h"
#include "core/config_reader.h"
#include "models/hub_fields.h"

#include <algorithm>
#include <string>

namespace lintime::models {
namespace {

using namespace config;

// The key's value, or nullptr when absent (a JSON null counts as absent).
const json* find_key(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

// The first present key of the given aliases (GPT2Config writes n_embd; hidden_size is its alias).
const json* find_alias(const json& object, std::initializer_list<const char*> keys, std::string& found) {
  for (const char* key : keys) {
    if (const json* value = find_key(object, key)) {
      found = key;
      return value;
    }
  }
  return nullptr;
}

void require_value(const json& object, const char* key, bool expected) {
  if (const json* value = find_key(object, key)) {
    LINTIME_CHECK(read_bool(key, *value) == expected, "config key \"", key, "\": expected ",
                  expected ? "true" : "false", " (the only BASED variant lintime runs)");
  }
}

std::vector<int64_t> read_layer_list(const std::string& key, const json& value) {
  if (!value.is_array()) wrong_type(key, "a list of layer indices", value);
  std::vector<int64_t> layers;
  for (const json& item : value) layers.push_back(read_integer(key, item));
  return layers;
}

std::string target_of(const std::string& key, const json& mixer) {
  if (!mixer.is_object()) wrong_type(key, "an object with a \"_target_\"", mixer);
  const json* target = find_key(mixer, "_target_");
  LINTIME_CHECK(target != nullptr, "config key \"", key, "\": missing \"_target_\" (the mixer class)");
  return read_string(key + "._target_", *target);
}

bool contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

void read_conv_mixer(const json& mixer, BasedConfig& c) {
  const std::string target = target_of("mixer", mixer);
  LINTIME_CHECK(contains(target, "BaseConv"), "config key \"mixer._target_\": expected HazyResearch's BaseConv ",
                "(based.models.mixers.convolution.BaseConv), got \"", target, "\"");
  if (const json* v = find_key(mixer, "expand_proj")) {
    LINTIME_CHECK(read_integer("mixer.expand_proj", *v) == 4, "config key \"mixer.expand_proj\": expected 4, got ",
                  shown(*v));
  }
  // "kernel_sizes" is swallowed by BaseConv's **kwargs: only "kernel_size" sets the kernel.
  if (const json* v = find_key(mixer, "kernel_size")) c.conv_kernel_size = read_integer("mixer.kernel_size", *v);
  if (const json* v = find_key(mixer, "use_bias")) c.conv_bias = read_bool("mixer.use_bias", *v);
}

void read_linear_attention_mixer(const json& mixer, BasedConfig& c) {
  const std::string target = target_of("alt_mixer", mixer);
  LINTIME_CHECK(contains(target, "LinearAttention"), "config key \"alt_mixer._target_\": expected HazyResearch's ",
                "LinearAttention, got \"", target, "\"");
  if (const json* v = find_key(mixer, "feature_dim")) c.feature_dim = read_integer("alt_mixer.feature_dim", *v);
  if (const json* v = find_key(mixer, "num_heads")) c.linear_attention_heads = read_integer("alt_mixer.num_heads", *v);
  if (const json* v = find_key(mixer, "feature_map")) {
    const bool taylor = v->is_string() ? v->get<std::string>() == "taylor_exp"
                                       : contains(target_of("alt_mixer.feature_map", *v), "TaylorExp");
    LINTIME_CHECK(taylor, "config key \"alt_mixer.feature_map\": expected the Taylor map (TaylorExp / \"taylor_exp\"), "
                  "got ", shown(*v));
  }
  if (const json* v = find_key(mixer, "feature_name")) {
    const std::string name = read_string("alt_mixer.feature_name", *v);
    LINTIME_CHECK(name == "taylor_exp", "config key \"alt_mixer.feature_name\": expected \"taylor_exp\", got \"",
                  name, "\"");
  }
  // fla's parallel_based adds 1e-6 to the normaliser; the quadratic form 1e-12.
  if (const json* v = find_key(mixer, "parallel_implementation")) {
    if (read_string("alt_mixer.parallel_implementation", *v) == "fla_parallel") c.linear_attention_eps = 1e-6;
  }
  if (const json* v = find_key(mixer, "eps")) c.linear_attention_eps = read_number("alt_mixer.eps", *v);
}

void read_sliding_window_mixer(const json& mixer, BasedConfig& c) {
  const std::string target = target_of("alt_mixer_2", mixer);
  LINTIME_CHECK(contains(target, "slide") || contains(target, "Sliding"), "config key \"alt_mixer_2._target_\": ",
                "expected HazyResearch's SlidingAttention, got \"", target, "\"");
  const json* size = find_key(mixer, "window_size");
  LINTIME_CHECK(size != nullptr, "config key \"alt_mixer_2.window_size\": missing (the sliding window)");
  const int64_t window_size = read_integer("alt_mixer_2.window_size", *size);
  LINTIME_CHECK(window_size >= 0, "config key \"alt_mixer_2.window_size\": expected >= 0, got ", window_size);
  c.window = window_size / 2 + 1;
  require_value(mixer, "causal", true);
}

}  // namespace

BasedMixer BasedConfig::mixer_of(int64_t layer) const {
  auto listed = [&](const std::vector<int64_t>& layers) {
    return std::find(layers.begin(), layers.end(), layer) != layers.end();
  };
  if (listed(sliding_window_layers)) return BasedMixer::sliding_window;
  if (listed(linear_attention_layers)) return BasedMixer::linear_attention;
  return BasedMixer::conv;
}

int64_t BasedConfig::padded_vocab_size() const {
  return (vocab_size + pad_vocab_size_multiple - 1) / pad_vocab_size_multiple * pad_vocab_size_multiple;
}

void BasedConfig::validate() const {
  config::check_size("vocab_size", vocab_size, config::size_limits::kVocabulary);
  config::check_size("pad_vocab_size_multiple", pad_vocab_size_multiple, config::size_limits::kKernel);
  config::check_size("n_embd", hidden_size, config::size_limits::kWidth);
  config::check_size("n_layer", num_layers, config::size_limits::kLayers);
  config::check_size("n_head", num_heads, config::size_limits::kHeads);
  config::check_size("n_inner", inner_size, config::size_limits::kWidth);
  config::check_size("mixer.kernel_size", conv_kernel_size, config::size_limits::kKernel);
  config::check_size("alt_mixer.feature_dim", feature_dim, 256);  // the Taylor map has 1 + d + d² features
  config::check_size("alt_mixer.num_heads", linear_attention_heads, config::size_limits::kHeads);
  LINTIME_CHECK(hidden_size % num_heads == 0, "config key \"n_head\": expected a divisor of n_embd = ", hidden_size,
                ", got ", num_heads);
  LINTIME_CHECK(!rotary || (hidden_size / num_heads) % 2 == 0, "config key \"n_head\": rotary embeddings need an ",
                "even head dim, got ", hidden_size / num_heads);
  LINTIME_CHECK(hidden_size % linear_attention_heads == 0, "config key \"alt_mixer.num_heads\": expected a divisor ",
                "of n_embd = ", hidden_size, ", got ", linear_attention_heads);
  LINTIME_CHECK(norm_eps > 0, "config key \"layer_norm_epsilon\": expected > 0, got ", norm_eps);
  LINTIME_CHECK(linear_attention_eps >= 0, "config key \"alt_mixer.eps\": expected >= 0, got ", linear_attention_eps);
  for (const auto& [key, layers] : {std::pair<const char*, const std::vector<int64_t>*>{"alt_mixer_layers",
                                                                                         &linear_attention_layers},
                                    {"alt_mixer_2_layers", &sliding_window_layers}}) {
    for (const int64_t layer : *layers) {
      LINTIME_CHECK(layer >= 0 && layer < num_layers, "config key \"", key, "\": layer ", layer,
                    " is outside [0, n_layer = ", num_layers, ")");
    }
  }
}

BasedConfig BasedConfig::from_json(const json& input) {
  LINTIME_CHECK(input.is_object(), "BASED config: expected a JSON object, got ", input.type_name());
  BasedConfig c;
  std::string key;
  if (const json* v = find_key(input, "vocab_size")) c.vocab_size = read_integer("vocab_size", *v);
  if (const json* v = find_key(input, "pad_vocab_size_multiple")) {
    c.pad_vocab_size_multiple = read_integer("pad_vocab_size_multiple", *v);
  }
  if (const json* v = find_alias(input, {"n_embd", "hidden_size"}, key)) c.hidden_size = read_integer(key, *v);
  if (const json* v = find_alias(input, {"n_layer", "num_hidden_layers"}, key)) {
    c.num_layers = read_integer(key, *v);
    config::check_size(key, c.num_layers, config::size_limits::kLayers);  // before the loop over layers below
  }
  if (const json* v = find_alias(input, {"n_head", "num_attention_heads"}, key)) c.num_heads = read_integer(key, *v);
  // GatedMlp: 8 d / 3 when n_inner is null, then rounded up to a multiple of 256.
  int64_t inner = c.hidden_size * 8 / 3;
  if (const json* v = find_key(input, "n_inner")) inner = read_integer("n_inner", *v);
  c.inner_size = (inner + 255) / 256 * 256;
  if (const json* v = find_key(input, "layer_norm_epsilon")) c.norm_eps = read_number("layer_norm_epsilon", *v);
  if (const json* v = find_key(input, "residual_in_fp32")) c.residual_in_fp32 = read_bool("residual_in_fp32", *v);
  if (const json* v = find_key(input, "tie_word_embeddings")) {
    c.tie_word_embeddings = read_bool("tie_word_embeddings", *v);
  }
  if (const json* v = find_key(input, "mlp_fc1_bias")) c.mlp_fc1_bias = read_bool("mlp_fc1_bias", *v);
  if (const json* v = find_key(input, "mlp_fc2_bias")) c.mlp_fc2_bias = read_bool("mlp_fc2_bias", *v);
  if (const json* v = find_key(input, "qkv_proj_bias")) c.qkv_proj_bias = read_bool("qkv_proj_bias", *v);
  if (const json* v = find_key(input, "out_proj_bias")) c.out_proj_bias = read_bool("out_proj_bias", *v);
  if (const json* v = find_key(input, "rotary_emb_fraction")) {
    const double fraction = read_number("rotary_emb_fraction", *v);
    LINTIME_CHECK(fraction == 0.0 || fraction == 1.0, "config key \"rotary_emb_fraction\": expected 0 or 1 ",
                  "(rotary over none or all of the head dim), got ", fraction);
    c.rotary = fraction == 1.0;
  }
  if (const json* v = find_key(input, "rotary_emb_base")) c.rotary_base = read_number("rotary_emb_base", *v);
  require_value(input, "rotary_emb_interleaved", false);
  LINTIME_CHECK(find_key(input, "rotary_emb_scale_base") == nullptr,
                "config key \"rotary_emb_scale_base\": expected null (lintime runs no xPos scaling)");
  if (const json* v = find_key(input, "initializer_range")) c.initializer_range = read_number("initializer_range", *v);
  if (const json* v = find_key(input, "activation_function")) {
    const std::string activation = read_string("activation_function", *v);
    LINTIME_CHECK(activation == "swiglu", "config key \"activation_function\": expected \"swiglu\" (BASED's gated ",
                  "MLP), got \"", activation, "\"");
  }
  require_value(input, "rms_norm", true);
  require_value(input, "prenorm", true);
  require_value(input, "parallel_block", false);
  require_value(input, "scale_attn_weights", true);
  require_value(input, "scale_attn_by_inverse_layer_idx", false);
  for (const char* positions : {"n_positions", "max_position_embeddings"}) {
    if (const json* v = find_key(input, positions)) {
      LINTIME_CHECK(read_integer(positions, *v) == 0, "config key \"", positions, "\": expected 0 (BASED has no ",
                    "learned position embeddings), got ", shown(*v));
    }
  }
  if (const json* v = find_key(input, "alt_mixer_layers")) c.linear_attention_layers = read_layer_list("alt_mixer_layers", *v);
  if (const json* v = find_key(input, "alt_mixer_2_layers")) {
    c.sliding_window_layers = read_layer_list("alt_mixer_2_layers", *v);
  }
  // Every kind of layer the lists ask for needs its mixer object (a missing one would mean
  // flash-attn's full attention there, which lintime does not build for BASED).
  const json* conv = find_key(input, "mixer");
  const json* linear = find_key(input, "alt_mixer");
  const json* sliding = find_key(input, "alt_mixer_2");
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const BasedMixer kind = c.mixer_of(layer);
    const char* needed = kind == BasedMixer::conv ? "mixer" : kind == BasedMixer::linear_attention ? "alt_mixer"
                                                                                                   : "alt_mixer_2";
    const json* object = kind == BasedMixer::conv ? conv : kind == BasedMixer::linear_attention ? linear : sliding;
    LINTIME_CHECK(object != nullptr, "config key \"", needed, "\": missing, but layer ", layer, " uses it");
  }
  if (conv != nullptr) read_conv_mixer(*conv, c);
  if (linear != nullptr) read_linear_attention_mixer(*linear, c);
  if (sliding != nullptr) read_sliding_window_mixer(*sliding, c);
  c.validate();
  return c;
}

BasedConfig BasedConfig::load(const std::string& path) {
  return load_json_config(path, "BASED config file", [](const json& parsed) { return from_json(parsed); });
}

}  // namespace lintime::models
