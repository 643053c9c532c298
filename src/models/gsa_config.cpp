// GsaConfig parsing, validation and writing. Every key has one handler that checks the JSON
// type; validate() checks values and the relations between them.
#include "models/gsa_config.h"

#include "core/config_reader.h"
#include "models/hub_fields.h"

#include "core/error.h"
#include "layers/swiglu_mlp.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

namespace lintime::models {

namespace {

using nlohmann::json;

using namespace config;

}  // namespace

int64_t GsaConfig::key_dim() const {
  return static_cast<int64_t>(static_cast<double>(hidden_size) * expand_k);
}

int64_t GsaConfig::value_dim() const {
  return static_cast<int64_t>(static_cast<double>(hidden_size) * expand_v);
}

int64_t GsaConfig::resolved_intermediate_size() const {
  return layers::SwiGluMlp::intermediate_size_for(hidden_size, hidden_ratio, intermediate_size);
}

bool GsaConfig::has_hybrid_attention() const {
  if (!attn.has_value() || !attn->is_object()) return false;
  auto layers = attn->find("layers");
  return layers != attn->end() && layers->is_array() && !layers->empty();
}

void GsaConfig::validate() const {
  auto positive = [](const char* key, auto value) {
    LINTIME_CHECK(value > 0, "config key \"", key, "\": expected a positive value, got ", value);
  };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_heads", num_heads);
  if (num_kv_heads.has_value()) positive("num_kv_heads", *num_kv_heads);
  LINTIME_CHECK(num_heads % resolved_num_kv_heads() == 0, "config key \"num_kv_heads\": expected a divisor of num_heads = ",
                num_heads, ", got ", resolved_num_kv_heads());
  positive("expand_k", expand_k);
  positive("expand_v", expand_v);
  LINTIME_CHECK(key_dim() % num_heads == 0, "config key \"num_heads\": expected a divisor of hidden_size * expand_k = ",
                key_dim(), ", got ", num_heads);
  LINTIME_CHECK(value_dim() % num_heads == 0,
                "config key \"num_heads\": expected a divisor of hidden_size * expand_v = ", value_dim(), ", got ",
                num_heads);
  if (num_slots.has_value()) positive("num_slots", *num_slots);
  positive("gate_logit_normalizer", gate_logit_normalizer);
  LINTIME_CHECK(!clamp_min.has_value(), "config key \"clamp_min\": expected null (gate clamping is not supported)");
  LINTIME_CHECK(!clamp_max.has_value(), "config key \"clamp_max\": expected null (gate clamping is not supported)");
  LINTIME_CHECK(feature_map == "swish" || feature_map == "relu",
                "config key \"feature_map\": expected \"swish\" or \"relu\", got \"", feature_map, "\"");
  positive("conv_size", conv_size);
  LINTIME_CHECK(!attnres_block_size.has_value(), "config key \"attnres_block_size\": expected null (attention ",
                "residuals across blocks are not supported)");
  LINTIME_CHECK(!use_output_gate, "config key \"use_output_gate\": expected false (GSA has no output gate)");
  LINTIME_CHECK(use_norm, "config key \"use_norm\": expected true (GSA always applies g_norm)");
  positive("hidden_ratio", hidden_ratio);
  if (intermediate_size.has_value()) positive("intermediate_size", *intermediate_size);
  LINTIME_CHECK(hidden_act == "swish" || hidden_act == "silu",
                "config key \"hidden_act\": expected \"swish\" or \"silu\", got \"", hidden_act, "\"");
  positive("norm_eps", norm_eps);
  positive("max_position_embeddings", max_position_embeddings);
  LINTIME_CHECK(initializer_range >= 0.0, "config key \"initializer_range\": expected a non-negative value, got ",
                initializer_range);
  for (const auto& [key, id] : {std::pair{"pad_token_id", pad_token_id}, std::pair{"bos_token_id", bos_token_id},
                                std::pair{"eos_token_id", eos_token_id}}) {
    LINTIME_CHECK(!id.has_value() || (*id >= 0 && *id < vocab_size), "config key \"", key,
                  "\": expected null or a token id in [0, vocab_size = ", vocab_size, "), got ", *id);
  }
  LINTIME_CHECK(!use_rope.value_or(false), "config key \"use_rope\": expected false (GSA uses no rotary embedding)");
}

GsaConfig GsaConfig::from_json(const json& input) {
  LINTIME_CHECK(input.is_object(), "GSA config: expected a JSON object, got ", input.type_name());
  GsaConfig c;
  using Handler = std::function<void(const std::string&, const json&)>;
  const std::map<std::string, Handler> handlers = {
      {"model_type",
       [&](const std::string& k, const json& v) {
         const std::string type = read_string(k, v);
         LINTIME_CHECK(type == "gsa", "config key \"model_type\": expected \"gsa\", got \"", type, "\"");
       }},
      {"vocab_size", [&](const std::string& k, const json& v) { c.vocab_size = read_integer(k, v); }},
      {"hidden_size", [&](const std::string& k, const json& v) { c.hidden_size = read_integer(k, v); }},
      {"num_hidden_layers", [&](const std::string& k, const json& v) { c.num_hidden_layers = read_integer(k, v); }},
      {"num_heads", [&](const std::string& k, const json& v) { c.num_heads = read_integer(k, v); }},
      {"num_kv_heads", [&](const std::string& k, const json& v) { c.num_kv_heads = read_optional_integer(k, v); }},
      {"num_slots", [&](const std::string& k, const json& v) { c.num_slots = read_optional_integer(k, v); }},
      {"gate_logit_normalizer",
       [&](const std::string& k, const json& v) { c.gate_logit_normalizer = read_number(k, v); }},
      {"clamp_min", [&](const std::string& k, const json& v) { c.clamp_min = read_optional_number(k, v); }},
      {"clamp_max", [&](const std::string& k, const json& v) { c.clamp_max = read_optional_number(k, v); }},
      {"expand_k", [&](const std::string& k, const json& v) { c.expand_k = read_number(k, v); }},
      {"expand_v", [&](const std::string& k, const json& v) { c.expand_v = read_number(k, v); }},
      {"feature_map", [&](const std::string& k, const json& v) { c.feature_map = read_string(k, v); }},
      {"use_short_conv", [&](const std::string& k, const json& v) { c.use_short_conv = read_bool(k, v); }},
      {"conv_size", [&](const std::string& k, const json& v) { c.conv_size = read_integer(k, v); }},
      {"use_output_gate", [&](const std::string& k, const json& v) { c.use_output_gate = read_bool(k, v); }},
      {"use_norm", [&](const std::string& k, const json& v) { c.use_norm = read_bool(k, v); }},
      {"hidden_ratio", [&](const std::string& k, const json& v) { c.hidden_ratio = read_number(k, v); }},
      {"intermediate_size",
       [&](const std::string& k, const json& v) { c.intermediate_size = read_optional_integer(k, v); }},
      {"hidden_act", [&](const std::string& k, const json& v) { c.hidden_act = read_string(k, v); }},
      {"elementwise_affine", [&](const std::string& k, const json& v) { c.elementwise_affine = read_bool(k, v); }},
      {"norm_eps", [&](const std::string& k, const json& v) { c.norm_eps = read_number(k, v); }},
      {"max_position_embeddings",
       [&](const std::string& k, const json& v) { c.max_position_embeddings = read_integer(k, v); }},
      {"initializer_range", [&](const std::string& k, const json& v) { c.initializer_range = read_number(k, v); }},
      {"tie_word_embeddings", [&](const std::string& k, const json& v) { c.tie_word_embeddings = read_bool(k, v); }},
      {"use_cache", [&](const std::string& k, const json& v) { c.use_cache = read_bool(k, v); }},
      {"pad_token_id", [&](const std::string& k, const json& v) { c.pad_token_id = read_optional_integer(k, v); }},
      {"bos_token_id", [&](const std::string& k, const json& v) { c.bos_token_id = read_optional_integer(k, v); }},
      {"eos_token_id", [&](const std::string& k, const json& v) { c.eos_token_id = read_optional_integer(k, v); }},
      {"attn",
       [&](const std::string& k, const json& v) {
         if (v.is_null()) {
           c.attn.reset();
         } else if (v.is_object()) {
           c.attn = v;
         } else {
           wrong_type(k, "an object or null", v);
         }
       }},
      {"use_l2warp", [&](const std::string& k, const json& v) { c.use_l2warp = read_bool(k, v); }},
      {"attnres_block_size",
       [&](const std::string& k, const json& v) { c.attnres_block_size = read_optional_integer(k, v); }},
      {"norm_first", [&](const std::string& k, const json& v) { c.norm_first = read_optional_bool(k, v); }},
      {"attn_mode", [&](const std::string& k, const json& v) { c.attn_mode = read_optional_string(k, v); }},
      {"share_conv_kernel",
       [&](const std::string& k, const json& v) { c.share_conv_kernel = read_optional_bool(k, v); }},
      {"use_rope", [&](const std::string& k, const json& v) { c.use_rope = read_optional_bool(k, v); }},
  };
  LINTIME_CHECK(input.contains("model_type"), "config key \"model_type\": missing, expected \"gsa\"");
  for (const auto& [key, value] : input.items()) {
    auto handler = handlers.find(key);
    if (handler != handlers.end()) {
      handler->second(key, value);
    } else if (c.hub.read(key, value)) {
    } else if (key.rfind("fuse_", 0) == 0) {
      c.fuse_flags[key] = read_bool(key, value);
    } else {
      fail("config key \"", key, "\": unknown key for model_type \"gsa\"");
    }
  }
  c.validate();
  return c;
}

json GsaConfig::to_json() const {
  json out;
  out["model_type"] = "gsa";
  out["vocab_size"] = vocab_size;
  out["hidden_size"] = hidden_size;
  out["num_hidden_layers"] = num_hidden_layers;
  out["num_heads"] = num_heads;
  out["num_kv_heads"] = optional_json(num_kv_heads);
  out["num_slots"] = optional_json(num_slots);
  out["gate_logit_normalizer"] = gate_logit_normalizer;
  out["clamp_min"] = optional_json(clamp_min);
  out["clamp_max"] = optional_json(clamp_max);
  out["expand_k"] = expand_k;
  out["expand_v"] = expand_v;
  out["feature_map"] = feature_map;
  out["use_short_conv"] = use_short_conv;
  out["conv_size"] = conv_size;
  out["use_output_gate"] = use_output_gate;
  out["use_norm"] = use_norm;
  out["hidden_ratio"] = hidden_ratio;
  out["intermediate_size"] = optional_json(intermediate_size);
  out["hidden_act"] = hidden_act;
  out["elementwise_affine"] = elementwise_affine;
  out["norm_eps"] = norm_eps;
  out["max_position_embeddings"] = max_position_embeddings;
  out["initializer_range"] = initializer_range;
  out["tie_word_embeddings"] = tie_word_embeddings;
  out["use_cache"] = use_cache;
  out["pad_token_id"] = optional_json(pad_token_id);
  out["bos_token_id"] = optional_json(bos_token_id);
  out["eos_token_id"] = optional_json(eos_token_id);
  out["attn"] = attn.has_value() ? *attn : json(nullptr);
  for (const auto& [key, flag] : fuse_flags) out[key] = flag;
  out["use_l2warp"] = use_l2warp;
  out["attnres_block_size"] = optional_json(attnres_block_size);
  if (norm_first.has_value()) out["norm_first"] = *norm_first;
  if (attn_mode.has_value()) out["attn_mode"] = *attn_mode;
  if (share_conv_kernel.has_value()) out["share_conv_kernel"] = *share_conv_kernel;
  if (use_rope.has_value()) out["use_rope"] = *use_rope;
  hub.write(out);
  return out;
}

GsaConfig GsaConfig::load(const std::string& path) {
  return load_json_config(path, "GSA config file", [](const json& parsed) { return from_json(parsed); });
}

void GsaConfig::save(const std::string& path) const {
  validate();
  write_json_file_atomically(path, to_json());
}

}  // namespace lintime::models
