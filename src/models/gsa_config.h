// The configuration of fla's GSA causal LM (config.json with model_type "gsa", gsa.md §4):
// every field fla's GSAConfig writes, with fla's defaults, plus the Hugging Face bookkeeping
// keys. Parsing rejects unknown keys, wrong JSON types and invalid values with one line naming
// the key and what was expected (lintime::Error).
#pragma once

#include "models/hub_fields.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace lintime::models {

struct GsaConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 2048;
  int64_t num_hidden_layers = 24;
  int64_t num_heads = 4;
  std::optional<int64_t> num_kv_heads;  // null = num_heads
  std::optional<int64_t> num_slots = 64;  // null = head_k_dim (fla's layer default)
  double gate_logit_normalizer = 8.0;
  std::optional<double> clamp_min;  // fla exposes them; lintime supports only null
  std::optional<double> clamp_max;
  double expand_k = 1.0;
  double expand_v = 1.0;
  std::string feature_map = "swish";  // "swish" or "relu" ("t2r" is rejected)
  bool use_short_conv = false;
  int64_t conv_size = 4;
  bool use_output_gate = false;  // must be false (fla's GSA has no output gate)
  bool use_norm = true;          // must be true (g_norm is always applied)
  double hidden_ratio = 4.0;
  std::optional<int64_t> intermediate_size;  // null = fla's rule from hidden_ratio
  std::string hidden_act = "swish";          // "swish" or "silu"
  bool elementwise_affine = true;            // g_norm has a weight
  double norm_eps = 1e-6;
  int64_t max_position_embeddings = 2048;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  bool use_cache = true;
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> bos_token_id = 1;
  std::optional<int64_t> eos_token_id = 2;
  // Hybrid softmax-attention layers (fla's "attn", models/hybrid_attention.h): null, one
  // specification or a list of them, kept as written.
  std::optional<nlohmann::json> attn;
  // fla's kernel-fusion flags (fuse_norm, fuse_swiglu, ...): accepted, kept, no effect on math.
  std::map<std::string, bool> fuse_flags = {{"fuse_cross_entropy", true},
                                            {"fuse_linear_cross_entropy", false},
                                            {"fuse_norm", true},
                                            {"fuse_swiglu", true}};
  bool use_l2warp = false;
  // fla 0.5's attention residuals across blocks: must be null (lintime's blocks have none).
  std::optional<int64_t> attnres_block_size;
  // Legacy marker of fla's mid-2024 checkpoints ("norm_first": true); null when absent.
  std::optional<bool> norm_first;
  std::optional<std::string> attn_mode;  // "chunk", "fused_recurrent", ... (informational)
  std::optional<bool> share_conv_kernel;
  std::optional<bool> use_rope;  // must be false if present
  HubFields hub{std::vector<std::string>{"GSAForCausalLM"}};

  // Derived sizes (the config is validated when these are meaningful).
  int64_t resolved_num_kv_heads() const { return num_kv_heads.value_or(num_heads); }
  int64_t key_dim() const;
  int64_t value_dim() const;
  int64_t head_k_dim() const { return key_dim() / num_heads; }
  int64_t head_v_dim() const { return value_dim() / num_heads; }
  int64_t resolved_num_slots() const { return num_slots.value_or(head_k_dim()); }
  int64_t resolved_intermediate_size() const;

  // Throws lintime::Error naming the first invalid field.
  void validate() const;

  static GsaConfig from_json(const nlohmann::json& json);
  nlohmann::json to_json() const;
  static GsaConfig load(const std::string& path);
  // Writes <path>.tmp, then renames it over path.
  void save(const std::string& path) const;
};

}  // namespace lintime::models
