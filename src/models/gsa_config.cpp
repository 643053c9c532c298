// GsaConfig parsing, validation and writing. Every key has one handler that checks the JSON
// type; validate() checks values and the relations between them.
#include "models/gsa_config.h"

#include "core/config_reader.h"
#include "models/fla_config_fields.h"
#include "models/hub_fields.h"
#include "models/hybrid_attention.h"

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


void GsaConfig::validate() const {
  validate_fla_keys(*this);
  if (num_slots.has_value()) {
    config::check_size("num_slots", *num_slots, config::size_limits::kHeads);
  }
  LINTIME_CHECK(gate_logit_normalizer > 0, "config key \"gate_logit_normalizer\": expected a positive value, got ",
                gate_logit_normalizer);
  LINTIME_CHECK(!clamp_min.has_value(), "config key \"clamp_min\": expected null (gate clamping is not supported)");
  LINTIME_CHECK(!clamp_max.has_value(), "config key \"clamp_max\": expected null (gate clamping is not supported)");
  LINTIME_CHECK(feature_map == "swish" || feature_map == "relu",
                "config key \"feature_map\": expected \"swish\" or \"relu\", got \"", feature_map, "\"");
  LINTIME_CHECK(!use_output_gate, "config key \"use_output_gate\": expected false (GSA has no output gate)");
  LINTIME_CHECK(use_norm, "config key \"use_norm\": expected true (GSA always applies g_norm)");
  LINTIME_CHECK(hidden_ratio > 0, "config key \"hidden_ratio\": expected a positive value, got ", hidden_ratio);
  LINTIME_CHECK(!use_rope.value_or(false), "config key \"use_rope\": expected false (GSA uses no rotary embedding)");
}

GsaConfig GsaConfig::from_json(const json& input) {
  LINTIME_CHECK(input.is_object(), "GSA config: expected a JSON object, got ", input.type_name());
  GsaConfig c;
  ConfigKeyHandlers handlers = {
      {"num_slots", [&](const std::string& k, const json& v) { c.num_slots = read_optional_integer(k, v); }},
      {"gate_logit_normalizer",
       [&](const std::string& k, const json& v) { c.gate_logit_normalizer = read_number(k, v); }},
      {"clamp_min", [&](const std::string& k, const json& v) { c.clamp_min = read_optional_number(k, v); }},
      {"clamp_max", [&](const std::string& k, const json& v) { c.clamp_max = read_optional_number(k, v); }},
      {"feature_map", [&](const std::string& k, const json& v) { c.feature_map = read_string(k, v); }},
      {"use_norm", [&](const std::string& k, const json& v) { c.use_norm = read_bool(k, v); }},
      {"hidden_ratio", [&](const std::string& k, const json& v) { c.hidden_ratio = read_number(k, v); }},
      {"elementwise_affine", [&](const std::string& k, const json& v) { c.elementwise_affine = read_bool(k, v); }},
      {"norm_first", [&](const std::string& k, const json& v) { c.norm_first = read_optional_bool(k, v); }},
      {"attn_mode", [&](const std::string& k, const json& v) { c.attn_mode = read_optional_string(k, v); }},
      {"share_conv_kernel",
       [&](const std::string& k, const json& v) { c.share_conv_kernel = read_optional_bool(k, v); }},
      {"use_rope", [&](const std::string& k, const json& v) { c.use_rope = read_optional_bool(k, v); }}
  };
  add_fla_key_handlers(handlers, c);
  read_fla_config(input, "gsa", handlers, c);
  c.validate();
  return c;
}

json GsaConfig::to_json() const {
  json out;
  out["model_type"] = "gsa";
  write_fla_keys(*this, out);
  out["num_slots"] = optional_json(num_slots);
  out["gate_logit_normalizer"] = gate_logit_normalizer;
  out["clamp_min"] = optional_json(clamp_min);
  out["clamp_max"] = optional_json(clamp_max);
  out["feature_map"] = feature_map;
  out["use_norm"] = use_norm;
  out["hidden_ratio"] = hidden_ratio;
  out["elementwise_affine"] = elementwise_affine;
  if (norm_first.has_value()) out["norm_first"] = *norm_first;
  if (attn_mode.has_value()) out["attn_mode"] = *attn_mode;
  if (share_conv_kernel.has_value()) out["share_conv_kernel"] = *share_conv_kernel;
  if (use_rope.has_value()) out["use_rope"] = *use_rope;
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
