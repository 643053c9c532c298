// fla's hybrid models (fla/models/hybrid.py): config.json's "attn" puts softmax-attention layers
// (fla's Attention: grouped-query, RoPE, optional sliding window, q/k/v biases, no o_proj bias)
// at chosen layer indices of a GSA or GLA model. "attn" is null, one specification or a list of
// them: {"layers": [i, ...], "num_heads": H, "num_kv_heads": H_kv (H), "qkv_bias": false,
// "window_size": null | w, "rope_theta": 10000}; a layer may appear in one specification only.
#pragma once

#include "models/decoder.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lintime::models {

// The softmax-attention mixer of each layer that "attn" names ("gqa" with its options), nullopt
// for the model's own layers. Throws lintime::Error ("config key \"attn.layers\": ...") for a bad
// specification: unknown keys, wrong types, layers out of range or assigned twice.
std::vector<std::optional<MixerSpec>> hybrid_attention_layers(const std::optional<nlohmann::json>& attn,
                                                              int64_t num_hidden_layers, int64_t hidden_size);

// ", N softmax-attention layers" when "attn" assigns N > 0 layers, "" otherwise (for `info`).
std::string hybrid_attention_summary(const std::optional<nlohmann::json>& attn, int64_t num_hidden_layers,
                                     int64_t hidden_size);

}  // namespace lintime::models
