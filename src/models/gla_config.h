// The configuration of fla's GLA causal LM (config.json with model_type "gla"; fla's GLAConfig):
// every field fla writes, with fla's defaults, plus the Hugging Face bookkeeping keys. Parsing
// rejects unknown keys, wrong JSON types and invalid values with one line naming the key and
// what was expected (lintime::Error). lintime runs fla's default layer: one key/value head per
// head, no feature map, no short convolution, no gate clamping, key gates only (use_gk).
#pragma once

#include "models/hub_fields.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace lintime::models {

struct GlaConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 2048;
  double expand_k = 0.5;
  double expand_v = 1.0;
  std::optional<double> hidden_ratio = 4.0;   // null = 4 (fla's GatedMLP)
  std::optional<int64_t> intermediate_size;  // null = fla's rule from hidden_ratio
  int64_t num_hidden_layers = 24;
  int64_t num_heads = 4;
  std::optional<int64_t> num_kv_heads;       // null or num_heads
  std::optional<std::string> feature_map;    // null, relu, swish or silu (on q and k)
  std::string attn_mode = "chunk";           // "chunk", "fused_recurrent", "fused_chunk" (same math)
  bool use_short_conv = false;               // must be false
  int64_t conv_size = 4;
  bool use_output_gate = true;
  std::optional<double> clamp_min;           // must be null
  std::string hidden_act = "swish";          // "swish" or "silu": the MLP's and the output gate's
  int64_t max_position_embeddings = 2048;
  bool elementwise_affine = true;            // must be true (g_norm has a weight)
  double norm_eps = 1e-6;                    // the block norms' and the layer's g_norm's
  bool use_gk = true;                        // must be true
  bool use_gv = false;                       // must be false
  std::optional<nlohmann::json> attn;        // hybrid softmax-attention layers (models/hybrid_attention.h)
  bool use_cache = true;
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> bos_token_id = 1;
  std::optional<int64_t> eos_token_id = 2;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  // fla's kernel-fusion flags: fuse_norm also names the layer's gated norm (see norm_name()).
  std::map<std::string, bool> fuse_flags = {{"fuse_cross_entropy", true},
                                            {"fuse_linear_cross_entropy", false},
                                            {"fuse_norm", true},
                                            {"fuse_swiglu", true}};
  bool use_l2warp = false;
  std::optional<int64_t> attnres_block_size;  // must be null
  HubFields hub{std::vector<std::string>{"GLAForCausalLM"}};

  int64_t key_dim() const;
  int64_t value_dim() const;
  int64_t resolved_intermediate_size() const;
  // The name fla gives the layer's norm: "g_norm_swish_gate" when it fuses the norm with a swish
  // output gate (fuse_norm, use_output_gate, hidden_act "swish"), "g_norm" otherwise.
  std::string norm_name() const;

  // Throws lintime::Error naming the first invalid field.
  void validate() const;

  static GlaConfig from_json(const nlohmann::json& json);
  nlohmann::json to_json() const;
  static GlaConfig load(const std::string& path);
  // Writes <path>.tmp, then renames it over path.
  void save(const std::string& path) const;
};

}  // namespace lintime::models
