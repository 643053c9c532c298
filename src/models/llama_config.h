// The configuration of Hugging Face's Llama and Mistral causal LMs (config.json with model_type
// "llama" or "mistral"): the Transformer++ of the GSA paper — RoPE, grouped-query attention,
// SwiGLU, RMSNorm. Reads both ways transformers writes rotary settings: version 4's rope_theta
// + rope_scaling and version 5's rope_parameters. Unknown keys, wrong JSON types, invalid values
// and settings lintime does not implement (rope types other than default / linear / llama3,
// hidden_act other than silu, pretraining_tp > 1) are one-line lintime::Errors naming the key.
#pragma once

#include "layers/rotary.h"
#include "models/hub_fields.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lintime::models {

using layers::RopeSettings;

// Rotary frequencies: θ_i = position · inv_freq_i, inv_freq_i = rope_theta^(−2i / head_dim),
// then rescaled by rope_type ("default": unchanged; "linear": / factor; "llama3": Llama 3.1's
// wavelength-dependent interpolation between 1 and 1 / factor).

struct LlamaConfig {
  std::string model_type = "llama";  // "llama" or "mistral"
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  std::optional<int64_t> num_key_value_heads;  // null = num_attention_heads
  std::optional<int64_t> head_dim;             // null = hidden_size / num_attention_heads
  std::string hidden_act = "silu";
  int64_t max_position_embeddings = 2048;
  double initializer_range = 0.02;
  double rms_norm_eps = 1e-6;
  bool use_cache = true;
  std::optional<int64_t> pad_token_id;
  std::optional<int64_t> bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};  // eos_token_id: an integer or a list (Llama 3)
  int64_t pretraining_tp = 1;
  bool tie_word_embeddings = false;
  RopeSettings rope;
  bool attention_bias = false;
  double attention_dropout = 0.0;
  bool mlp_bias = false;
  std::optional<int64_t> sliding_window;  // Mistral: each query sees its last w keys, itself included
  HubFields hub{std::vector<std::string>{"LlamaForCausalLM"}};

  int64_t resolved_num_key_value_heads() const { return num_key_value_heads.value_or(num_attention_heads); }
  int64_t resolved_head_dim() const { return head_dim.value_or(hidden_size / num_attention_heads); }

  // Throws lintime::Error naming the first invalid field.
  void validate() const;

  static LlamaConfig from_json(const nlohmann::json& json);
  // transformers 4's spelling (rope_theta, rope_scaling), which version 5 also reads.
  nlohmann::json to_json() const;
  static LlamaConfig load(const std::string& path);
  // Writes <path>.tmp, then renames it over path.
  void save(const std::string& path) const;
};

}  // namespace lintime::models
