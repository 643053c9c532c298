// LlamaConfig parsing, validation and writing. Every key has one handler that checks the JSON
// type; validate() checks values and the relations between them.
#include "models/llama_config.h"

#include "core/config_reader.h"
#include "models/hub_fields.h"

#include "core/error.h"

#include <functional>
#include <map>

namespace lintime::models {

namespace {

using nlohmann::json;
using namespace config;

// rope_scaling (transformers 4) or rope_parameters (5): {"rope_type" | "type", "factor", ...,
// and in version 5 "rope_theta"}.
void read_rope_object(const std::string& key, const json& value, RopeSettings& rope) {
  if (value.is_null()) return;
  if (!value.is_object()) wrong_type(key, "an object or null", value);
  for (const auto& [field, item] : value.items()) {
    const std::string name = key + "." + field;
    if (field == "rope_type" || field == "type") {
      rope.rope_type = read_string(name, item);
    } else if (field == "rope_theta") {
      rope.rope_theta = read_number(name, item);
    } else if (field == "factor") {
      rope.factor = read_number(name, item);
    } else if (field == "low_freq_factor") {
      rope.low_freq_factor = read_number(name, item);
    } else if (field == "high_freq_factor") {
      rope.high_freq_factor = read_number(name, item);
    } else if (field == "original_max_position_embeddings") {
      rope.original_max_position_embeddings = read_integer(name, item);
    } else if (field == "partial_rotary_factor") {
      LINTIME_CHECK(read_number(name, item) == 1.0, "config key \"", name,
                    "\": expected 1.0 (partial rotary embeddings are not supported)");
    } else {
      fail("config key \"", name, "\": unknown rotary setting (expected rope_type, rope_theta, factor, ",
           "low_freq_factor, high_freq_factor, original_max_position_embeddings)");
    }
  }
}

}  // namespace

void LlamaConfig::validate() const {
  auto positive = [](const char* key, auto value) {
    LINTIME_CHECK(value > 0, "config key \"", key, "\": expected a positive value, got ", value);
  };
  LINTIME_CHECK(model_type == "llama" || model_type == "mistral", "config key \"model_type\": expected \"llama\" or ",
                "\"mistral\", got \"", model_type, "\"");
  config::check_size("vocab_size", vocab_size, config::size_limits::kVocabulary);
  config::check_size("hidden_size", hidden_size, config::size_limits::kWidth);
  config::check_size("intermediate_size", intermediate_size, config::size_limits::kWidth);
  config::check_size("num_hidden_layers", num_hidden_layers, config::size_limits::kLayers);
  config::check_size("num_attention_heads", num_attention_heads, config::size_limits::kHeads);
  if (num_key_value_heads.has_value()) {
    config::check_size("num_key_value_heads", *num_key_value_heads, config::size_limits::kHeads);
  }
  LINTIME_CHECK(num_attention_heads % resolved_num_key_value_heads() == 0,
                "config key \"num_key_value_heads\": expected a divisor of num_attention_heads = ", num_attention_heads,
                ", got ", resolved_num_key_value_heads());
  if (head_dim.has_value()) {
    config::check_size("head_dim", *head_dim, config::size_limits::kWidth);
  } else {
    LINTIME_CHECK(hidden_size % num_attention_heads == 0, "config key \"num_attention_heads\": expected a divisor of ",
                  "hidden_size = ", hidden_size, " (or an explicit head_dim), got ", num_attention_heads);
  }
  LINTIME_CHECK(resolved_head_dim() % 2 == 0, "config key \"head_dim\": expected an even head dim for rotary ",
                "embeddings, got ", resolved_head_dim());
  LINTIME_CHECK(hidden_act == "silu" || hidden_act == "swish", "config key \"hidden_act\": expected \"silu\", got \"",
                hidden_act, "\"");
  positive("max_position_embeddings", max_position_embeddings);
  LINTIME_CHECK(rms_norm_eps >= 0.0, "config key \"rms_norm_eps\": expected a non-negative value, got ", rms_norm_eps);
  LINTIME_CHECK(pretraining_tp == 1, "config key \"pretraining_tp\": expected 1 (the sliced tensor-parallel ",
                "projections give the same result only up to rounding), got ", pretraining_tp);
  positive("rope_theta", rope.rope_theta);
  LINTIME_CHECK(rope.rope_type == "default" || rope.rope_type == "linear" || rope.rope_type == "llama3",
                "config key \"rope_scaling\": rope_type \"", rope.rope_type,
                "\" is not supported (expected \"default\", \"linear\" or \"llama3\")");
  if (rope.rope_type != "default") positive("rope_scaling.factor", rope.factor);
  if (rope.rope_type == "llama3") {
    positive("rope_scaling.low_freq_factor", rope.low_freq_factor);
    positive("rope_scaling.original_max_position_embeddings", rope.original_max_position_embeddings);
    LINTIME_CHECK(rope.high_freq_factor > rope.low_freq_factor, "config key \"rope_scaling.high_freq_factor\": ",
                  "expected more than low_freq_factor = ", rope.low_freq_factor, ", got ", rope.high_freq_factor);
  }
  LINTIME_CHECK(attention_dropout >= 0.0 && attention_dropout < 1.0,
                "config key \"attention_dropout\": expected a value in [0, 1), got ", attention_dropout);
  if (sliding_window.has_value()) positive("sliding_window", *sliding_window);
  for (int64_t eos : eos_token_ids) LINTIME_CHECK(eos >= 0, "config key \"eos_token_id\": expected ids >= 0, got ", eos);
}

LlamaConfig LlamaConfig::from_json(const json& input) {
  LlamaConfig c;
  LINTIME_CHECK(input.is_object(), "a Llama config must be a JSON object");
  LINTIME_CHECK(input.contains("model_type"), "config key \"model_type\": missing, expected \"llama\" or \"mistral\"");
  c.model_type = read_string("model_type", input.at("model_type"));
  if (c.model_type == "mistral") {  // MistralConfig's defaults differ from LlamaConfig's
    c.intermediate_size = 14336;
    c.num_key_value_heads = 8;
    c.max_position_embeddings = 4096 * 32;
    c.sliding_window = 4096;
    c.hub.architectures = {"MistralForCausalLM"};
  }
  using Handler = std::function<void(const std::string&, const json&)>;
  const std::map<std::string, Handler> handlers = {
      {"model_type", [](const std::string&, const json&) {}},
      {"vocab_size", [&](const std::string& k, const json& v) { c.vocab_size = read_integer(k, v); }},
      {"hidden_size", [&](const std::string& k, const json& v) { c.hidden_size = read_integer(k, v); }},
      {"intermediate_size", [&](const std::string& k, const json& v) { c.intermediate_size = read_integer(k, v); }},
      {"num_hidden_layers", [&](const std::string& k, const json& v) { c.num_hidden_layers = read_integer(k, v); }},
      {"num_attention_heads",
       [&](const std::string& k, const json& v) { c.num_attention_heads = read_integer(k, v); }},
      {"num_key_value_heads",
       [&](const std::string& k, const json& v) { c.num_key_value_heads = read_optional_integer(k, v); }},
      {"head_dim", [&](const std::string& k, const json& v) { c.head_dim = read_optional_integer(k, v); }},
      {"hidden_act", [&](const std::string& k, const json& v) { c.hidden_act = read_string(k, v); }},
      {"max_position_embeddings",
       [&](const std::string& k, const json& v) { c.max_position_embeddings = read_integer(k, v); }},
      {"initializer_range", [&](const std::string& k, const json& v) { c.initializer_range = read_number(k, v); }},
      {"rms_norm_eps", [&](const std::string& k, const json& v) { c.rms_norm_eps = read_number(k, v); }},
      {"use_cache", [&](const std::string& k, const json& v) { c.use_cache = read_bool(k, v); }},
      {"pad_token_id", [&](const std::string& k, const json& v) { c.pad_token_id = read_optional_integer(k, v); }},
      {"bos_token_id", [&](const std::string& k, const json& v) { c.bos_token_id = read_optional_integer(k, v); }},
      {"eos_token_id",
       [&](const std::string& k, const json& v) {
         c.eos_token_ids.clear();
         if (v.is_array()) {
           for (const auto& item : v) c.eos_token_ids.push_back(read_integer(k, item));
         } else if (!v.is_null()) {
           c.eos_token_ids.push_back(read_integer(k, v));
         }
       }},
      {"pretraining_tp", [&](const std::string& k, const json& v) { c.pretraining_tp = read_integer(k, v); }},
      {"tie_word_embeddings", [&](const std::string& k, const json& v) { c.tie_word_embeddings = read_bool(k, v); }},
      {"rope_theta", [&](const std::string& k, const json& v) { c.rope.rope_theta = read_number(k, v); }},
      {"rope_scaling", [&](const std::string& k, const json& v) { read_rope_object(k, v, c.rope); }},
      {"rope_parameters", [&](const std::string& k, const json& v) { read_rope_object(k, v, c.rope); }},
      {"attention_bias", [&](const std::string& k, const json& v) { c.attention_bias = read_bool(k, v); }},
      {"attention_dropout", [&](const std::string& k, const json& v) { c.attention_dropout = read_number(k, v); }},
      {"mlp_bias", [&](const std::string& k, const json& v) { c.mlp_bias = read_bool(k, v); }},
      {"sliding_window", [&](const std::string& k, const json& v) { c.sliding_window = read_optional_integer(k, v); }},
  };
  // Hugging Face's generation and output switches: no effect on the model's arithmetic.
  static const char* const ignored[] = {"output_attentions", "output_hidden_states", "return_dict",
                                        "use_return_dict",   "torchscript",          "tokenizer_class",
                                        "use_bfloat16",      "is_decoder",           "add_cross_attention"};
  for (const auto& [key, value] : input.items()) {
    auto handler = handlers.find(key);
    if (handler != handlers.end()) {
      handler->second(key, value);
      continue;
    }
    if (c.hub.read(key, value)) continue;
    bool skip = false;
    for (const char* name : ignored) skip = skip || key == name;
    LINTIME_CHECK(skip, "config key \"", key, "\": unknown key for model_type \"", c.model_type, "\"");
  }
  if (c.model_type == "llama") c.sliding_window.reset();  // Hugging Face's Llama ignores it too
  c.validate();
  return c;
}

json LlamaConfig::to_json() const {
  json out;
  out["model_type"] = model_type;
  out["vocab_size"] = vocab_size;
  out["hidden_size"] = hidden_size;
  out["intermediate_size"] = intermediate_size;
  out["num_hidden_layers"] = num_hidden_layers;
  out["num_attention_heads"] = num_attention_heads;
  out["num_key_value_heads"] = resolved_num_key_value_heads();
  out["head_dim"] = resolved_head_dim();
  out["hidden_act"] = hidden_act;
  out["max_position_embeddings"] = max_position_embeddings;
  out["initializer_range"] = initializer_range;
  out["rms_norm_eps"] = rms_norm_eps;
  out["use_cache"] = use_cache;
  out["pad_token_id"] = optional_json(pad_token_id);
  out["bos_token_id"] = optional_json(bos_token_id);
  if (eos_token_ids.size() == 1) {
    out["eos_token_id"] = eos_token_ids.front();
  } else if (eos_token_ids.empty()) {
    out["eos_token_id"] = nullptr;
  } else {
    out["eos_token_id"] = eos_token_ids;
  }
  out["pretraining_tp"] = pretraining_tp;
  out["tie_word_embeddings"] = tie_word_embeddings;
  out["rope_theta"] = rope.rope_theta;
  if (rope.rope_type == "default") {
    out["rope_scaling"] = nullptr;
  } else {
    json scaling = {{"rope_type", rope.rope_type}, {"factor", rope.factor}};
    if (rope.rope_type == "llama3") {
      scaling["low_freq_factor"] = rope.low_freq_factor;
      scaling["high_freq_factor"] = rope.high_freq_factor;
      scaling["original_max_position_embeddings"] = rope.original_max_position_embeddings;
    }
    out["rope_scaling"] = scaling;
  }
  out["attention_bias"] = attention_bias;
  out["attention_dropout"] = attention_dropout;
  out["mlp_bias"] = mlp_bias;
  if (model_type == "mistral") out["sliding_window"] = optional_json(sliding_window);
  hub.write(out);
  return out;
}

LlamaConfig LlamaConfig::load(const std::string& path) {
  return load_json_config(path, "Llama config file", [](const json& parsed) { return from_json(parsed); });
}

void LlamaConfig::save(const std::string& path) const {
  validate();
  write_json_file_atomically(path, to_json());
}

}  // namespace lintime::models
