// The configuration of the BASED language model (based.md §4) as HazyResearch's released
// config.json writes it: a GPT-2 config (n_embd, n_layer, n_head, n_inner, ...) plus three mixer
// objects chosen by layer index, "mixer" (BaseConv, every other layer), "alt_mixer"
// (LinearAttention, at alt_mixer_layers) and "alt_mixer_2" (SlidingAttention, at
// alt_mixer_2_layers; alt_mixer_2 wins where both list a layer).
//
// Window convention: lintime's `window` is the number of keys a query sees, itself included.
// HazyResearch's SlidingAttention calls flash-attn with window (window_size // 2, 0), so a query
// sees window_size // 2 + 1 keys: window = window_size / 2 + 1 (window_size 128 → 65 keys).
//
// Keys lintime does not use (Hugging Face and GPT-2 bookkeeping, dropout rates, l_max) are
// accepted and ignored; keys it reads are checked for type and for the values it supports, with
// one line naming the key and what was expected (lintime::Error).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lintime::models {

enum class BasedMixer { conv, linear_attention, sliding_window };

struct BasedConfig {
  int64_t vocab_size = 50257;
  int64_t pad_vocab_size_multiple = 1;  // the embedding has vocab_size rounded up to this
  int64_t hidden_size = 1024;           // n_embd
  int64_t num_layers = 27;              // n_layer
  int64_t num_heads = 16;               // n_head: the sliding-window heads
  int64_t inner_size = 2048;            // n_inner rounded up to 256 (8 d / 3 when null)
  double norm_eps = 1e-5;               // layer_norm_epsilon (RMSNorm)
  bool residual_in_fp32 = true;
  bool tie_word_embeddings = true;
  bool mlp_fc1_bias = true, mlp_fc2_bias = true;    // GPT-2 config defaults; the 360M model: false
  bool qkv_proj_bias = true, out_proj_bias = true;  // sliding-window projections
  double rotary_base = 10000.0;         // rotary_emb_base
  bool rotary = false;                  // rotary_emb_fraction: 1 (whole head) or 0 (none)
  double initializer_range = 0.02;
  // Mixers.
  std::vector<int64_t> linear_attention_layers;  // alt_mixer_layers
  std::vector<int64_t> sliding_window_layers;    // alt_mixer_2_layers
  int64_t conv_kernel_size = 3;
  bool conv_bias = true;                         // BaseConv use_bias
  int64_t feature_dim = 16;                      // LinearAttention feature_dim (d')
  int64_t linear_attention_heads = 16;
  double linear_attention_eps = 1e-12;           // 1e-6 with parallel_implementation "fla_parallel"
  int64_t window = 65;                           // keys seen per query (window_size / 2 + 1)

  BasedMixer mixer_of(int64_t layer) const;
  int64_t padded_vocab_size() const;
  // Throws lintime::Error naming the first invalid field.
  void validate() const;

  static BasedConfig from_json(const nlohmann::json& json);
  static BasedConfig load(const std::string& path);
};

}  // namespace lintime::models
