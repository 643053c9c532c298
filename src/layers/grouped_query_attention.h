// The self-attention of Hugging Face's Llama and Mistral (the Transformer++ baseline):
//   q = q_proj(x), k = k_proj(x), v = v_proj(x)   heads of head_dim; H query heads share each of
//                                                  H_kv key/value heads (grouped-query attention)
//   q, k = rotary(q), rotary(k)                    half-split layout, given inverse frequencies
//   o = softmax(q kᵀ · head_dim^-0.5 + causal [and sliding-window] mask) v
//   y = o_proj(o)
// through torch's scaled_dot_product_attention (FlashAttention on a GPU), k and v never repeated.
// Sliding window w (Mistral): query i sees keys j with i − w < j ≤ i. With a KV cache, new
// tokens attend to the cached ones (prefill from empty, or one token per step).
// Weight names follow Hugging Face ("q_proj", "k_proj", "v_proj", "o_proj"; biases optional).
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rotary.h"
#include "state/kv_cache.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>

namespace lintime::layers {

struct GroupedQueryAttentionOptions {
  int64_t hidden_size = 0;
  int64_t num_heads = 1;
  int64_t num_kv_heads = 1;
  int64_t head_dim = 0;
  bool bias = false;                      // attention_bias: q, k and v projections
  std::optional<bool> output_bias;        // o_proj's bias; nullopt = bias (Llama), false in fla's Attention
  std::optional<int64_t> sliding_window;  // keys seen per query, itself included
  double initializer_range = 0.02;
};

class GroupedQueryAttention : public Module {
 public:
  // `rotary` is shared by the model's layers. Validates the options (one lintime::Error line).
  GroupedQueryAttention(const GroupedQueryAttentionOptions& options, std::shared_ptr<const RotaryTable> rotary,
                        at::Generator& generator);

  // x [B, T, hidden_size] -> [B, T, hidden_size] in x's dtype. With a cache, x continues the
  // cached tokens (positions cache->length onward) and its keys and values are appended.
  at::Tensor forward(const at::Tensor& x, state::KvLayerCache* cache = nullptr) const;
  // x [R, T, hidden_size] continuing the slots of `rows` at their own positions (a server's
  // running batch): the new keys and values are written into the slot cache in place, and each row
  // attends to its own slot's keys (FlashAttention's varlen kernel on a GPU, row by row elsewhere).
  at::Tensor forward_rows(const at::Tensor& x, state::KvRows& rows) const;

  const GroupedQueryAttentionOptions& options() const { return options_; }
  // Whether torch's flash kernels take attention in this dtype and head dim on a GPU (CUDA, half
  // precision, a head dim they compile: a multiple of 8, at most 256).
  static bool flash_attends(at::ScalarType dtype, int64_t head_dim);

 private:
  // q [B, T, H, D] (not yet rotated) and k, v [B, T, H_kv, D]; k undefined when q holds the
  // queries and keys together ([B, T, H + H_kv, D], one product, rotated together).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> project(const at::Tensor& x) const;
  // q and k rotated by `rotate` (k undefined: q holds both, as project returns them).
  std::pair<at::Tensor, at::Tensor> rotated(const at::Tensor& q, const at::Tensor& k,
                                            const std::function<at::Tensor(const at::Tensor&)>& rotate) const;
  // Softmax attention of the last T of `keys` positions: q [B, T, H, D], k, v [B, keys, H_kv, D]
  // (causal, within the window) -> [B, T, H, D].
  at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const;
  GroupedQueryAttentionOptions options_;
  std::shared_ptr<const RotaryTable> rotary_;

 public:
  Linear q_proj, k_proj, v_proj, o_proj;  // q, k, v weights back to back (place_adjacent)

 protected:
  void parameters_moved() override;
};

}  // namespace lintime::layers
