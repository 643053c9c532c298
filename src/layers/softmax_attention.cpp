// Causal softmax attention mixers (see the header).
#include "layers/softmax_attention.h"

#include "core/error.h"
#include "core/tensor_checks.h"
#include "layers/rotary.h"
#include "ops/register/ops.h"

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>

namespace lintime::layers {

int64_t SoftmaxAttention::validated_head_dim(const SoftmaxAttentionOptions& options) {
  const char* who = "SoftmaxAttention";
  LINTIME_CHECK(options.hidden_size > 0, who, ": hidden_size must be positive, got ", options.hidden_size);
  LINTIME_CHECK(options.num_heads > 0 && options.hidden_size % options.num_heads == 0, who,
                ": num_heads must be positive and divide hidden_size = ", options.hidden_size, ", got ",
                options.num_heads);
  LINTIME_CHECK(options.window >= 0, who, ": window must be >= 0 (0: all earlier keys), got ", options.window);
  LINTIME_CHECK(options.counted_length > 0, who, ": counted_length must be positive, got ", options.counted_length);
  return options.hidden_size / options.num_heads;
}

SoftmaxAttention::SoftmaxAttention(const SoftmaxAttentionOptions& options, at::Generator& generator)
    : options_(options),
      head_dim_(validated_head_dim(options)),
      Wqkv(options.hidden_size, 3 * options.hidden_size, options.initializer_range, generator, options.bias),
      out_proj(options.hidden_size, options.hidden_size,
               options.out_initializer_range >= 0 ? options.out_initializer_range : options.initializer_range,
               generator, options.bias) {
  register_module("Wqkv", Wqkv);
  register_module("out_proj", out_proj);
}

at::Tensor SoftmaxAttention::forward(const at::Tensor& x) const {
  check_shape("SoftmaxAttention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), heads = options_.num_heads;
  // zoology splits Wqkv's output as (three, heads, head_dim).
  const auto qkv = Wqkv.forward(x).view({batch, length, 3, heads, head_dim_}).unbind(2);  // 3 × [B, T, H, D]
  at::Tensor q = qkv[0], k = qkv[1];
  if (options_.rotary_base > 0) {
    q = apply_rotary(q, options_.rotary_base);
    k = apply_rotary(k, options_.rotary_base);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  at::Tensor o;
  if (options_.window == 0) {
    o = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), qkv[2].transpose(1, 2),
                                         /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true, scale)
            .transpose(1, 2);
  } else {
    o = ops::sliding_window_attention(q, k, qkv[2], options_.window, scale);
  }
  return out_proj.forward(o.reshape({batch, length, options_.hidden_size}));
}

at::Tensor SoftmaxAttention::forward_cached(const at::Tensor& x, at::Tensor& key_cache, at::Tensor& value_cache,
                                            at::Tensor& positions) const {
  LINTIME_CHECK(options_.window > 0, "SoftmaxAttention: decoding keeps ring buffers for sliding windows only");
  check_shape("SoftmaxAttention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), heads = options_.num_heads;
  const bool step = key_cache.defined();
  LINTIME_CHECK(!step || length == 1, "SoftmaxAttention: after the prefill, one token at a time, got ", length);
  const auto qkv = Wqkv.forward(x).view({batch, length, 3, heads, head_dim_}).unbind(2);
  // Every sequence of the batch is at the same position (prefill from 0, then steps together).
  const int64_t first = step ? positions[0].item<int64_t>() : 0;
  at::Tensor q = qkv[0], k = qkv[1];
  if (options_.rotary_base > 0) {
    q = apply_rotary(q, options_.rotary_base, first);
    k = apply_rotary(k, options_.rotary_base, first);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  at::Tensor o;
  if (step) {
    o = ops::sliding_window_attention_step_(q.select(1, 0), k.select(1, 0), qkv[2].select(1, 0), options_.window,
                                            scale, key_cache, value_cache, positions)
            .unsqueeze(1);
  } else {
    o = ops::sliding_window_attention(q, k, qkv[2], options_.window, scale);
    std::tie(key_cache, value_cache, positions) = ops::sliding_window_cache_from_prefill(k, qkv[2], options_.window);
  }
  return out_proj.forward(o.reshape({batch, length, options_.hidden_size}));
}

int64_t SoftmaxAttention::state_bytes_per_sequence(const SoftmaxAttentionOptions& options) {
  validated_head_dim(options);
  const int64_t keys = options.window > 0 ? options.window : options.counted_length;
  return 2 * options.hidden_size * keys * 4;
}

int64_t SoftmaxAttention::parameter_count_for(const SoftmaxAttentionOptions& options) {
  validated_head_dim(options);
  const int64_t d = options.hidden_size;
  return 4 * d * d + (options.bias ? 4 * d : 0);  // Wqkv and out_proj
}

}  // namespace lintime::layers
