// Causal softmax attention: zoology's MHA (the MQAR Transformer baseline) and SlidingAttn (the
// sliding-window baseline of the BASED paper's recall frontier), and the BASED language model's
// SlidingAttention (based.md §2, with rotary embeddings and no biases):
//   q, k, v = split(Wqkv x)            Wqkv: d → 3d (bias optional); heads of d / num_heads dims,
//                                      laid out (three, heads, head_dim)
//   q, k    = rotary(q), rotary(k)     when rotary_base > 0 (half-split, layers/rotary.h)
//   o       = softmax(q kᵀ · head_dim^-0.5 + causal [and window] mask) v
//   y       = out_proj(o)              d → d (bias optional)
// zoology's mixers have no positional encoding (the BaseConv before them carries order).
// window = 0: every earlier key (torch's scaled_dot_product_attention); window = w > 0: each
// query sees its last w keys, itself included (ops::sliding_window_attention; zoology's
// SlidingAttn block_size b keeps b + 1 keys, so b = w − 1).
// Weight names follow zoology ("Wqkv", "out_proj"); weights N(0, initializer_range), zero biases.
#pragma once

#include "layers/linear.h"
#include "layers/module.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::layers {

struct SoftmaxAttentionOptions {
  int64_t hidden_size = 0;
  int64_t num_heads = 1;         // zoology's default for both mixers
  int64_t window = 0;            // keys seen per query, itself included; 0 = all earlier keys
  int64_t counted_length = 1024;  // the sequence length the KV cache is counted at (state bytes)
  bool bias = true;              // zoology: true; the BASED LM: false
  double rotary_base = 0.0;      // > 0: rotary embeddings over the whole head dim
  double initializer_range = 0.02;
  double out_initializer_range = -1.0;  // out_proj's std; < 0: initializer_range
};

class SoftmaxAttention : public Module {
 public:
  // Validates the options (one lintime::Error line naming the option).
  SoftmaxAttention(const SoftmaxAttentionOptions& options, at::Generator& generator);

  // x [B, T, hidden_size] -> [B, T, hidden_size] in x's dtype.
  at::Tensor forward(const at::Tensor& x) const;
  // Sliding windows only: the same, keeping ring buffers of the last `window` keys (after rotary)
  // and values. Undefined buffers: x is a prefill from position 0 and the buffers are built from
  // it; defined: x is one token at position `positions` (the step op).
  at::Tensor forward_cached(const at::Tensor& x, at::Tensor& key_cache, at::Tensor& value_cache,
                            at::Tensor& positions) const;

  // Zoology's accounting (based.md §6), fp32: keys and values of the cache, 2·d·L for full
  // attention at L = counted_length, 2·d·w for a window of w.
  int64_t state_bytes_per_sequence() const { return state_bytes_per_sequence(options_); }
  static int64_t state_bytes_per_sequence(const SoftmaxAttentionOptions& options);
  static int64_t parameter_count_for(const SoftmaxAttentionOptions& options);

  const SoftmaxAttentionOptions& options() const { return options_; }

 private:
  static int64_t validated_head_dim(const SoftmaxAttentionOptions& options);
  SoftmaxAttentionOptions options_;
  int64_t head_dim_;

 public:
  Linear Wqkv, out_proj;
};

}  // namespace lintime::layers
