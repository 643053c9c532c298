// Parsing of fla's hybrid-attention specifications (see the header).
#include "models/hybrid_attention.h"

#include "core/config_reader.h"
#include "core/error.h"

#include <cmath>
#include <string>

namespace lintime::models {

using nlohmann::json;

std::vector<std::optional<MixerSpec>> hybrid_attention_layers(const std::optional<json>& attn,
                                                              int64_t num_hidden_layers, int64_t hidden_size) {
  std::vector<std::optional<MixerSpec>> result(static_cast<size_t>(std::max<int64_t>(num_hidden_layers, 0)));
  if (!attn.has_value() || attn->is_null()) return result;
  LINTIME_CHECK(attn->is_object() || attn->is_array(),
                "config key \"attn\": expected null, an object or a list of objects, got ", attn->dump());
  const json specs = attn->is_object() ? json::array({*attn}) : *attn;
  for (size_t index = 0; index < specs.size(); ++index) {
    const std::string path = attn->is_object() ? "attn" : "attn[" + std::to_string(index) + "]";
    const json& spec = specs[index];
    LINTIME_CHECK(spec.is_object(), "config key \"", path, "\": expected an object, got ", spec.dump());
    config::StrictObject reader(spec, path, {"layers", "num_heads", "num_kv_heads", "qkv_bias", "window_size", "rope_theta"});
    LINTIME_CHECK(reader.has("layers") && reader.has("num_heads"), "config key \"", path,
                  "\": \"layers\" and \"num_heads\" are required");
    const json layers = reader.get_raw("layers");
    LINTIME_CHECK(layers.is_array(), "config key \"", reader.key_path("layers"),
                  "\": expected a list of layer indices, got ", layers.dump());
    const int64_t heads = reader.require_integer("num_heads");
    LINTIME_CHECK(heads > 0 && hidden_size % heads == 0, "config key \"", reader.key_path("num_heads"),
                  "\": expected a positive divisor of hidden_size = ", hidden_size, ", got ", heads);
    const json kv_raw = reader.get_raw("num_kv_heads");
    const int64_t kv_heads = kv_raw.is_null() ? heads : config::read_integer(reader.key_path("num_kv_heads"), kv_raw);
    LINTIME_CHECK(kv_heads > 0 && heads % kv_heads == 0, "config key \"", reader.key_path("num_kv_heads"),
                  "\": expected a positive divisor of num_heads = ", heads, ", got ", kv_heads);
    const bool qkv_bias = reader.get_as<bool>("qkv_bias", false);
    const json window = reader.get_raw("window_size");
    const double rope_theta = reader.get_as<double>("rope_theta", 10000.0);
    LINTIME_CHECK(std::isfinite(rope_theta) && rope_theta > 0, "config key \"", reader.key_path("rope_theta"),
                  "\": expected a positive finite number, got ", rope_theta);
    MixerSpec mixer{"gqa",
                    {{"num_heads", heads},
                     {"num_kv_heads", kv_heads},
                     {"head_dim", hidden_size / heads},
                     {"bias", qkv_bias},
                     {"output_bias", false},
                     {"rope_theta", rope_theta}}};
    if (!window.is_null()) {
      const int64_t w = config::read_integer(reader.key_path("window_size"), window);
      LINTIME_CHECK(w > 0, "config key \"", reader.key_path("window_size"), "\": expected a positive integer, got ", w);
      mixer.options["sliding_window"] = w;
    }
    for (const json& layer : layers) {
      LINTIME_CHECK(layer.is_number_integer(), "config key \"", reader.key_path("layers"),
                    "\": expected integer layer indices, got ", layer.dump());
      const int64_t i = layer.get<int64_t>();
      LINTIME_CHECK(i >= 0 && i < num_hidden_layers, "config key \"", reader.key_path("layers"), "\": layer ", i,
                    " is out of range [0, ", num_hidden_layers, ")");
      LINTIME_CHECK(!result[static_cast<size_t>(i)].has_value(), "config key \"", reader.key_path("layers"),
                    "\": layer ", i, " is assigned twice");
      result[static_cast<size_t>(i)] = mixer;
    }
  }
  return result;
}

std::string hybrid_attention_summary(const std::optional<json>& attn, int64_t num_hidden_layers, int64_t hidden_size) {
  int64_t count = 0;
  for (const auto& layer : hybrid_attention_layers(attn, num_hidden_layers, hidden_size)) count += layer ? 1 : 0;
  return count > 0 ? ", " + std::to_string(count) + " softmax-attention layers" : "";
}

}  // namespace lintime::models
