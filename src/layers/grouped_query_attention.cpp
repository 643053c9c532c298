// Grouped-query self-attention of Llama / Mistral (see the header).
#include "layers/grouped_query_attention.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lintime::layers {
namespace {

const GroupedQueryAttentionOptions& validated(const GroupedQueryAttentionOptions& options) {
  const char* who = "GroupedQueryAttention";
  LINTIME_CHECK(options.hidden_size > 0, who, ": hidden_size must be positive, got ", options.hidden_size);
  LINTIME_CHECK(options.num_kv_heads > 0 && options.num_heads > 0 && options.num_heads % options.num_kv_heads == 0,
                who, ": num_kv_heads must be positive and divide num_heads = ", options.num_heads, ", got ",
                options.num_kv_heads);
  LINTIME_CHECK(options.head_dim > 0 && options.head_dim % 2 == 0, who, ": head_dim must be positive and even, got ",
                options.head_dim);
  LINTIME_CHECK(!options.sliding_window || *options.sliding_window > 0, who,
                ": sliding_window must be positive or absent, got ", options.sliding_window.value_or(0));
  return options;
}

// Which of `keys` cached-then-new keys each of the last `queries` tokens sees (true = attends):
// causal, and within the window when there is one. [queries, keys] bool.
at::Tensor attention_mask(int64_t queries, int64_t keys, std::optional<int64_t> window, const c10::Device& device) {
  const auto options = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor query_position = at::arange(keys - queries, keys, options).unsqueeze(1);  // [Tq, 1]
  const at::Tensor key_position = at::arange(0, keys, options).unsqueeze(0);                  // [1, Tk]
  at::Tensor mask = key_position <= query_position;
  if (window) mask = mask & (key_position > query_position - *window);
  return mask;
}

// Whether a decode step's attention can go straight to torch's flash kernel: CUDA, half
// precision, a head dim it compiles (multiple of 8, at most 256).
bool flash_decodes(const at::Tensor& q) {
  const int64_t dim = q.size(-1);
  return q.is_cuda() && (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf) && dim % 8 == 0 &&
         dim <= 256;
}

}  // namespace

GroupedQueryAttention::GroupedQueryAttention(const GroupedQueryAttentionOptions& options,
                                             std::shared_ptr<const RotaryTable> rotary, at::Generator& generator)
    : options_(validated(options)),
      rotary_(std::move(rotary)),
      q_proj(options.hidden_size, options.num_heads * options.head_dim, options.initializer_range, generator,
             options.bias),
      k_proj(options.hidden_size, options.num_kv_heads * options.head_dim, options.initializer_range, generator,
             options.bias),
      v_proj(options.hidden_size, options.num_kv_heads * options.head_dim, options.initializer_range, generator,
             options.bias),
      o_proj(options.num_heads * options.head_dim, options.hidden_size, options.initializer_range, generator,
             options.output_bias.value_or(options.bias)) {
  LINTIME_CHECK(rotary_ != nullptr && rotary_->inverse_frequency().size(0) * 2 == options.head_dim,
                "GroupedQueryAttention: the rotary table must cover head_dim = ", options.head_dim);
  register_module("q_proj", q_proj);
  register_module("k_proj", k_proj);
  register_module("v_proj", v_proj);
  register_module("o_proj", o_proj);
  place_adjacent({&q_proj, &k_proj, &v_proj});
}

void GroupedQueryAttention::parameters_moved() { place_adjacent({&q_proj, &k_proj, &v_proj}); }

at::Tensor GroupedQueryAttention::forward(const at::Tensor& x, state::KvLayerCache* cache) const {
  check_shape("GroupedQueryAttention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), dim = options_.head_dim;
  const int64_t past = cache ? cache->length : 0;
  const int64_t heads = options_.num_heads, kv_heads = options_.num_kv_heads;
  at::Tensor q, k, v;
  const at::Tensor qkv = joined_linear(x, {&q_proj, &k_proj, &v_proj});  // inferring: one product
  if (qkv.defined()) {  // [B, T, (H + 2 H_kv) D]: queries and keys rotated together
    const at::Tensor qk =
        rotary_->apply(qkv.narrow(2, 0, (heads + kv_heads) * dim).view({batch, length, heads + kv_heads, dim}), past);
    q = qk.narrow(2, 0, heads);
    k = qk.narrow(2, heads, kv_heads);
    v = qkv.narrow(2, (heads + kv_heads) * dim, kv_heads * dim).view({batch, length, kv_heads, dim});
  } else {
    q = rotary_->apply(q_proj.forward(x).view({batch, length, heads, dim}), past);
    k = rotary_->apply(k_proj.forward(x).view({batch, length, kv_heads, dim}), past);
    v = v_proj.forward(x).view({batch, length, kv_heads, dim});
  }
  q = q.transpose(1, 2);  // [B, H, T, D]
  k = k.transpose(1, 2);  // [B, H_kv, T, D]
  v = v.transpose(1, 2);
  if (cache) std::tie(k, v) = cache->append(k, v);
  const int64_t keys = past + length;
  const auto window = options_.sliding_window;
  std::optional<at::Tensor> mask;
  bool causal = false;
  if (length == 1) {  // a decode step sees every cached key, or the last `window`
    if (window && keys > *window) {
      k = k.narrow(2, keys - *window, *window);
      v = v.narrow(2, keys - *window, *window);
    }
  } else if (past == 0 && (!window || length <= *window)) {
    causal = true;
  } else {
    mask = attention_mask(length, keys, window, x.device());
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  at::Tensor o;
  if (length == 1 && flash_decodes(q)) {
    // torch 2.11 sends SDPA to cuDNN first on Hopper, and cuDNN builds a plan for every new key
    // length, i.e. every decode step: 50-64 ms per step of a 24-layer model, host-bound
    // (BENCHMARKS.md, "Generation"). The flash kernel needs no plan (and takes H_kv < H as is).
    o = std::get<0>(at::_scaled_dot_product_flash_attention(q, k, v, /*dropout_p=*/0.0, /*is_causal=*/false,
                                                            /*return_debug_mask=*/false, scale));
  } else {
    o = at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, causal, scale,
                                         /*enable_gqa=*/options_.num_heads != options_.num_kv_heads);
  }
  return o_proj.forward(o.transpose(1, 2).reshape({batch, length, options_.num_heads * dim}));
}

}  // namespace lintime::layers
