// GlaConfig parsing, validation and writing. Every key has one handler that checks the JSON
// type; validate() checks values and the relations between them.
#include "models/gla_config.h"

#include "core/config_reader.h"
#include "models/fla_config_fields.h"
#include "core/error.h"
#include "layers/swiglu_mlp.h"
#include "models/hybrid_attention.h"

#include <functional>

namespace lintime::models {

namespace {

using nlohmann::json;
using namespace config;

}  // namespace

int64_t GlaConfig::key_dim() const { return static_cast<int64_t>(static_cast<double>(hidden_size) * expand_k); }

int64_t GlaConfig::value_dim() const { return static_cast<int64_t>(static_cast<double>(hidden_size) * expand_v); }

int64_t GlaConfig::resolved_intermediate_size() const {
  return layers::SwiGluMlp::intermediate_size_for(hidden_size, hidden_ratio.value_or(4.0), intermediate_size);
}

std::string GlaConfig::norm_name() const {
  const auto fuse_norm = fuse_flags.find("fuse_norm");
  const bool fused = fuse_norm == fuse_flags.end() || fuse_norm->second;
  return fused && use_output_gate && hidden_act == "swish" ? "g_norm_swish_gate" : "g_norm";
}

void GlaConfig::validate() const {
  validate_fla_keys(*this);
  LINTIME_CHECK(!num_kv_heads.has_value() || *num_kv_heads == num_heads, "config key \"num_kv_heads\": expected null or ",
                "num_heads = ", num_heads, " (grouped key/value heads are not supported for GLA yet), got ",
                num_kv_heads.value_or(0));
  LINTIME_CHECK(!feature_map || *feature_map == "relu" || *feature_map == "swish" || *feature_map == "silu",
                "config key \"feature_map\": expected null, \"relu\", \"swish\" or \"silu\", got \"",
                feature_map.value_or(""), "\"");
  LINTIME_CHECK(attn_mode == "chunk" || attn_mode == "fused_recurrent" || attn_mode == "fused_chunk",
                "config key \"attn_mode\": expected \"chunk\", \"fused_recurrent\" or \"fused_chunk\", got \"", attn_mode,
                "\"");
  LINTIME_CHECK(!use_short_conv, "config key \"use_short_conv\": expected false (short convolutions are not supported ",
                "for GLA yet)");
  LINTIME_CHECK(!clamp_min.has_value(), "config key \"clamp_min\": expected null (gate clamping is not supported)");
  LINTIME_CHECK(elementwise_affine, "config key \"elementwise_affine\": expected true (g_norm without a weight is not ",
                "supported)");
  LINTIME_CHECK(use_gk, "config key \"use_gk\": expected true (GLA's key gates)");
  LINTIME_CHECK(!use_gv, "config key \"use_gv\": expected false (value gates are not supported)");
  if (hidden_ratio.has_value()) {
    LINTIME_CHECK(*hidden_ratio > 0, "config key \"hidden_ratio\": expected a positive value, got ", *hidden_ratio);
  }
}

GlaConfig GlaConfig::from_json(const json& input) {
  LINTIME_CHECK(input.is_object(), "GLA config: expected a JSON object, got ", input.type_name());
  GlaConfig c;
  ConfigKeyHandlers handlers = {
      {"hidden_ratio", [&](const std::string& k, const json& v) { c.hidden_ratio = read_optional_number(k, v); }},
      {"feature_map", [&](const std::string& k, const json& v) { c.feature_map = read_optional_string(k, v); }},
      {"attn_mode", [&](const std::string& k, const json& v) { c.attn_mode = read_string(k, v); }},
      {"clamp_min", [&](const std::string& k, const json& v) { c.clamp_min = read_optional_number(k, v); }},
      {"elementwise_affine",
       [&](const std::string& k, const json& v) { c.elementwise_affine = v.is_null() || read_bool(k, v); }},
      {"use_gk", [&](const std::string& k, const json& v) { c.use_gk = read_bool(k, v); }},
      {"use_gv", [&](const std::string& k, const json& v) { c.use_gv = read_bool(k, v); }}
  };
  add_fla_key_handlers(handlers, c);
  read_fla_config(input, "gla", handlers, c);
  c.validate();
  return c;
}

json GlaConfig::to_json() const {
  json out;
  out["model_type"] = "gla";
  write_fla_keys(*this, out);
  out["hidden_ratio"] = optional_json(hidden_ratio);
  out["feature_map"] = optional_json(feature_map);
  out["attn_mode"] = attn_mode;
  out["clamp_min"] = optional_json(clamp_min);
  out["elementwise_affine"] = elementwise_affine;
  out["use_gk"] = use_gk;
  out["use_gv"] = use_gv;
  return out;
}

GlaConfig GlaConfig::load(const std::string& path) {
  return load_json_config(path, "GLA config file", [](const json& parsed) { return from_json(parsed); });
}

void GlaConfig::save(const std::string& path) const {
  validate();
  write_json_file_atomically(path, to_json());
}

}  // namespace lintime::models
