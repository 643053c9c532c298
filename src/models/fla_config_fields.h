// What fla's model configs (GSAConfig, GLAConfig) share: the handlers of their common keys, and
// the decoder stack they describe (fla's names; each layer the model's own mixer except those
// the hybrid "attn" makes softmax attention). Templates over a config struct with these fields.
#pragma once

#include "core/config_reader.h"
#include "models/decoder.h"
#include "models/hybrid_attention.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>
#include <utility>

namespace lintime::models {

using ConfigKeyHandlers = std::map<std::string, std::function<void(const std::string&, const nlohmann::json&)>>;

// Adds the handlers of the keys every fla config has to `handlers` (one per key, each checking
// the JSON type) writing into `c`.
template <class Config>
void add_fla_key_handlers(ConfigKeyHandlers& handlers, Config& c) {
  using nlohmann::json;
  using namespace config;
  auto integer = [&](int64_t Config::*field) {
    return [&c, field](const std::string& k, const json& v) { c.*field = read_integer(k, v); };
  };
  auto optional_integer = [&](std::optional<int64_t> Config::*field) {
    return [&c, field](const std::string& k, const json& v) { c.*field = read_optional_integer(k, v); };
  };
  auto number = [&](double Config::*field) {
    return [&c, field](const std::string& k, const json& v) { c.*field = read_number(k, v); };
  };
  auto boolean = [&](bool Config::*field) {
    return [&c, field](const std::string& k, const json& v) { c.*field = read_bool(k, v); };
  };
  handlers.insert({{"vocab_size", integer(&Config::vocab_size)},
                   {"hidden_size", integer(&Config::hidden_size)},
                   {"num_hidden_layers", integer(&Config::num_hidden_layers)},
                   {"num_heads", integer(&Config::num_heads)},
                   {"num_kv_heads", optional_integer(&Config::num_kv_heads)},
                   {"expand_k", number(&Config::expand_k)},
                   {"expand_v", number(&Config::expand_v)},
                   {"use_short_conv", boolean(&Config::use_short_conv)},
                   {"conv_size", integer(&Config::conv_size)},
                   {"use_output_gate", boolean(&Config::use_output_gate)},
                   {"intermediate_size", optional_integer(&Config::intermediate_size)},
                   {"hidden_act", [&c](const std::string& k, const json& v) { c.hidden_act = read_string(k, v); }},
                   {"norm_eps", number(&Config::norm_eps)},
                   {"max_position_embeddings", integer(&Config::max_position_embeddings)},
                   {"initializer_range", number(&Config::initializer_range)},
                   {"tie_word_embeddings", boolean(&Config::tie_word_embeddings)},
                   {"use_cache", boolean(&Config::use_cache)},
                   {"pad_token_id", optional_integer(&Config::pad_token_id)},
                   {"bos_token_id", optional_integer(&Config::bos_token_id)},
                   {"eos_token_id", optional_integer(&Config::eos_token_id)},
                   {"use_l2warp", boolean(&Config::use_l2warp)},
                   {"attnres_block_size", optional_integer(&Config::attnres_block_size)},
                   {"attn", [&c](const std::string& k, const json& v) {
                      if (v.is_null()) {
                        c.attn.reset();
                      } else if (v.is_object() || v.is_array()) {
                        c.attn = v;
                      } else {
                        wrong_type(k, "an object, a list of objects or null", v);
                      }
                    }}});
}

// Checks the values of the keys every fla config has (one lintime::Error line naming the key).
template <class Config>
void validate_fla_keys(const Config& c) {
  auto positive = [](const char* key, auto value) {
    LINTIME_CHECK(value > 0, "config key \"", key, "\": expected a positive value, got ", value);
  };
  config::check_size("vocab_size", c.vocab_size, config::size_limits::kVocabulary);
  config::check_size("hidden_size", c.hidden_size, config::size_limits::kWidth);
  config::check_size("num_hidden_layers", c.num_hidden_layers, config::size_limits::kLayers);
  config::check_size("num_heads", c.num_heads, config::size_limits::kHeads);
  if (c.num_kv_heads.has_value()) config::check_size("num_kv_heads", *c.num_kv_heads, config::size_limits::kHeads);
  const int64_t kv_heads = c.num_kv_heads.value_or(c.num_heads);
  LINTIME_CHECK(c.num_heads % kv_heads == 0, "config key \"num_kv_heads\": expected a divisor of num_heads = ",
                c.num_heads, ", got ", kv_heads);
  LINTIME_CHECK(c.expand_k > 0 && c.expand_k <= 64, "config key \"expand_k\": expected a value in (0, 64], got ",
                c.expand_k);
  LINTIME_CHECK(c.expand_v > 0 && c.expand_v <= 64, "config key \"expand_v\": expected a value in (0, 64], got ",
                c.expand_v);
  LINTIME_CHECK(c.key_dim() > 0 && c.key_dim() % c.num_heads == 0,
                "config key \"num_heads\": expected a divisor of hidden_size * expand_k = ", c.key_dim(), ", got ",
                c.num_heads);
  LINTIME_CHECK(c.value_dim() > 0 && c.value_dim() % c.num_heads == 0,
                "config key \"num_heads\": expected a divisor of hidden_size * expand_v = ", c.value_dim(), ", got ",
                c.num_heads);
  config::check_size("conv_size", c.conv_size, config::size_limits::kKernel);
  if (c.intermediate_size.has_value()) {
    config::check_size("intermediate_size", *c.intermediate_size, config::size_limits::kWidth);
  }
  LINTIME_CHECK(c.hidden_act == "swish" || c.hidden_act == "silu",
                "config key \"hidden_act\": expected \"swish\" or \"silu\", got \"", c.hidden_act, "\"");
  positive("norm_eps", c.norm_eps);
  positive("max_position_embeddings", c.max_position_embeddings);
  LINTIME_CHECK(c.initializer_range >= 0.0, "config key \"initializer_range\": expected a non-negative value, got ",
                c.initializer_range);
  for (const auto& [key, id] : {std::pair{"pad_token_id", c.pad_token_id}, std::pair{"bos_token_id", c.bos_token_id},
                                std::pair{"eos_token_id", c.eos_token_id}}) {
    LINTIME_CHECK(!id.has_value() || (*id >= 0 && *id < c.vocab_size), "config key \"", key,
                  "\": expected null or a token id in [0, vocab_size = ", c.vocab_size, "), got ", *id);
  }
  LINTIME_CHECK(!c.attnres_block_size.has_value(), "config key \"attnres_block_size\": expected null (attention ",
                "residuals across blocks are not supported)");
  hybrid_attention_layers(c.attn, c.num_hidden_layers, c.hidden_size);  // checks the specification
}

// Reads `input` (a config.json object of `model_type`) into `c` with `handlers`: the Hugging
// Face bookkeeping keys and fla's fuse_* flags are kept, any other key is an error.
template <class Config>
void read_fla_config(const nlohmann::json& input, const char* model_type, const ConfigKeyHandlers& handlers,
                     Config& c) {
  LINTIME_CHECK(input.contains("model_type"), "config key \"model_type\": missing, expected \"", model_type, "\"");
  const std::string type = config::read_string("model_type", input.at("model_type"));
  LINTIME_CHECK(type == model_type, "config key \"model_type\": expected \"", model_type, "\", got \"", type, "\"");
  for (const auto& [key, value] : input.items()) {
    auto handler = handlers.find(key);
    if (key == "model_type") {
    } else if (handler != handlers.end()) {
      handler->second(key, value);
    } else if (c.hub.read(key, value)) {
    } else if (key.rfind("fuse_", 0) == 0) {
      c.fuse_flags[key] = config::read_bool(key, value);
    } else {
      fail("config key \"", key, "\": unknown key for model_type \"", model_type, "\"");
    }
  }
}

// Writes the keys add_fla_key_handlers reads, the fuse_* flags and the bookkeeping keys.
template <class Config>
void write_fla_keys(const Config& c, nlohmann::json& out) {
  out["vocab_size"] = c.vocab_size;
  out["hidden_size"] = c.hidden_size;
  out["num_hidden_layers"] = c.num_hidden_layers;
  out["num_heads"] = c.num_heads;
  out["num_kv_heads"] = config::optional_json(c.num_kv_heads);
  out["expand_k"] = c.expand_k;
  out["expand_v"] = c.expand_v;
  out["use_short_conv"] = c.use_short_conv;
  out["conv_size"] = c.conv_size;
  out["use_output_gate"] = c.use_output_gate;
  out["intermediate_size"] = config::optional_json(c.intermediate_size);
  out["hidden_act"] = c.hidden_act;
  out["norm_eps"] = c.norm_eps;
  out["max_position_embeddings"] = c.max_position_embeddings;
  out["initializer_range"] = c.initializer_range;
  out["tie_word_embeddings"] = c.tie_word_embeddings;
  out["use_cache"] = c.use_cache;
  out["pad_token_id"] = config::optional_json(c.pad_token_id);
  out["bos_token_id"] = config::optional_json(c.bos_token_id);
  out["eos_token_id"] = config::optional_json(c.eos_token_id);
  out["use_l2warp"] = c.use_l2warp;
  out["attnres_block_size"] = config::optional_json(c.attnres_block_size);
  out["attn"] = c.attn.has_value() ? *c.attn : nlohmann::json(nullptr);
  for (const auto& [key, flag] : c.fuse_flags) out[key] = flag;
  c.hub.write(out);
}

// The decoder of an fla config whose layers are `own` except the hybrid ones.
template <class Config>
DecoderConfig fla_decoder_config(const Config& config, std::string description, const MixerSpec& own) {
  DecoderConfig result;
  result.description = std::move(description);
  result.vocab_size = config.vocab_size;
  result.hidden_size = config.hidden_size;
  result.intermediate_size = config.resolved_intermediate_size();
  result.norm_eps = config.norm_eps;
  result.initializer_range = config.initializer_range;
  result.tie_word_embeddings = config.tie_word_embeddings;
  result.names = DecoderNames::fla();
  for (const auto& attention : hybrid_attention_layers(config.attn, config.num_hidden_layers, config.hidden_size)) {
    result.layers.push_back(attention.value_or(own));
  }
  return result;
}

}  // namespace lintime::models
