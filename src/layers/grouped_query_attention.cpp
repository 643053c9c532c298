// Grouped-query self-attention of Llama / Mistral (see the header).
#include "layers/grouped_query_attention.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <cmath>
#include <functional>
#include <utility>

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

// Whether a decode step's attention can go straight to torch's flash kernel.
bool flash_decodes(const at::Tensor& q) {
  return q.is_cuda() && GroupedQueryAttention::flash_attends(q.scalar_type(), q.size(-1));
}

}  // namespace

bool GroupedQueryAttention::flash_attends(at::ScalarType dtype, int64_t head_dim) {
  return (dtype == at::kBFloat16 || dtype == at::kHalf) && head_dim % 8 == 0 && head_dim <= 256;
}

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

std::tuple<at::Tensor, at::Tensor, at::Tensor> GroupedQueryAttention::project(const at::Tensor& x) const {
  const int64_t batch = x.size(0), length = x.size(1), dim = options_.head_dim;
  const int64_t heads = options_.num_heads, kv_heads = options_.num_kv_heads;
  const at::Tensor qkv = joined_linear(x, {&q_proj, &k_proj, &v_proj});  // inferring: one product
  if (!qkv.defined()) {
    return {q_proj.forward(x).view({batch, length, heads, dim}), k_proj.forward(x).view({batch, length, kv_heads, dim}),
            v_proj.forward(x).view({batch, length, kv_heads, dim})};
  }
  // [B, T, (H + 2 H_kv) D]: queries and keys stay one tensor until rotated
  const at::Tensor qk = qkv.narrow(2, 0, (heads + kv_heads) * dim).view({batch, length, heads + kv_heads, dim});
  return {qk, at::Tensor(), qkv.narrow(2, (heads + kv_heads) * dim, kv_heads * dim).view({batch, length, kv_heads, dim})};
}

std::pair<at::Tensor, at::Tensor> GroupedQueryAttention::rotated(
    const at::Tensor& q, const at::Tensor& k, const std::function<at::Tensor(const at::Tensor&)>& rotate) const {
  if (k.defined()) return {rotate(q), rotate(k)};
  const at::Tensor qk = rotate(q);  // queries and keys rotated together (one product)
  return {qk.narrow(2, 0, options_.num_heads), qk.narrow(2, options_.num_heads, options_.num_kv_heads)};
}

at::Tensor GroupedQueryAttention::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const {
  const int64_t length = q.size(1), keys = k.size(1), past = keys - length, dim = options_.head_dim;
  at::Tensor kt = k.transpose(1, 2), vt = v.transpose(1, 2);  // [B, H_kv, keys, D]
  const auto window = options_.sliding_window;
  std::optional<at::Tensor> mask;
  bool causal = false;
  if (length == 1) {  // a decode step sees every cached key, or the last `window`
    if (window && keys > *window) {
      kt = kt.narrow(2, keys - *window, *window);
      vt = vt.narrow(2, keys - *window, *window);
    }
  } else if (past == 0 && (!window || length <= *window)) {
    causal = true;
  } else {
    mask = attention_mask(length, keys, window, q.device());
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  const at::Tensor qt = q.transpose(1, 2);  // [B, H, T, D]
  at::Tensor o;
  if (length == 1 && flash_decodes(q)) {
    // torch 2.11 sends SDPA to cuDNN first on Hopper, and cuDNN builds a plan for every new key
    // length, i.e. every decode step: 50-64 ms per step of a 24-layer model, host-bound
    // (BENCHMARKS.md, "Generation"). The flash kernel needs no plan (and takes H_kv < H as is).
    o = std::get<0>(at::_scaled_dot_product_flash_attention(qt, kt, vt, /*dropout_p=*/0.0, /*is_causal=*/false,
                                                            /*return_debug_mask=*/false, scale));
  } else {
    o = at::scaled_dot_product_attention(qt, kt, vt, mask, /*dropout_p=*/0.0, causal, scale,
                                         /*enable_gqa=*/options_.num_heads != options_.num_kv_heads);
  }
  return o.transpose(1, 2);  // [B, T, H, D]
}

at::Tensor GroupedQueryAttention::forward(const at::Tensor& x, state::KvLayerCache* cache) const {
  check_shape("GroupedQueryAttention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), heads = options_.num_heads;
  const int64_t past = cache ? cache->length : 0;
  auto [q, k, v] = project(x);
  std::tie(q, k) = rotated(q, k, [&](const at::Tensor& t) { return rotary_->apply(t, past); });
  if (cache) std::tie(k, v) = cache->append(k, v);
  const at::Tensor o = attend(q, k, v);
  return o_proj.forward(o.reshape({batch, length, heads * options_.head_dim}));
}

at::Tensor GroupedQueryAttention::forward_rows(const at::Tensor& x, state::KvRows& rows) const {
  check_shape("GroupedQueryAttention", "x", x, {{"R", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const state::SlotRows& slots = *rows.slots;
  const int64_t count = x.size(0), length = x.size(1), heads = options_.num_heads, kv_heads = options_.num_kv_heads;
  const int64_t dim = options_.head_dim;
  LINTIME_CHECK(static_cast<int64_t>(slots.tokens.size()) == count && slots.rows.device() == x.device() &&
                    slots.positions.device() == x.device(),
                "GroupedQueryAttention: the slot rows must be ", count, " rows on x's device, got ",
                slots.tokens.size(), " on ", slots.rows.device());
  auto [q, k, v] = project(x);
  // Each row's new keys and values go after its slot's positions: cache[rows[r], tokens[r] + t].
  rows.make_room(length, v);  // v: k may still be joined to q (project)
  state::KvLayerCache& cache = *rows.cache;
  // The keys a row can reach end here (a bound for the rotary table and the varlen kernel).
  const int64_t end = slots.keys_up_to_capacity ? cache.keys.size(1) : slots.max_tokens() + length;
  std::tie(q, k) =
      rotated(q, k, [&](const at::Tensor& t) { return rotary_->apply_per_sequence(t, slots.positions, end); });
  const state::SlotRows::Placement& placed = slots.placement(length, cache.keys.size(1));
  cache.keys.index_put_({placed.slot, placed.position}, k);
  cache.values.index_put_({placed.slot, placed.position}, v);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  at::Tensor o;
  if (flash_decodes(q)) {
    // FlashAttention's varlen kernel reads each row's keys where its slot keeps them: row r's
    // start is rows[r] * capacity in the flattened cache, its length tokens[r] + T (seqused_k).
    // The causal mask is aligned to the last key, so a prompt chunk after cached tokens works too.
    const auto window = options_.sliding_window;
    o = std::get<0>(at::_flash_attention_forward(
        q.reshape({count * length, heads, dim}), cache.keys.view({-1, kv_heads, dim}),
        cache.values.view({-1, kv_heads, dim}), placed.starts_q, placed.starts_k, length, end, /*dropout_p=*/0.0,
        /*is_causal=*/true, /*return_debug_mask=*/false, scale,
        window ? std::optional<int64_t>(*window - 1) : std::nullopt, window ? std::optional<int64_t>(0) : std::nullopt,
        placed.keys_used));
  } else {  // each row alone over its slot's positions (the CPU; fp32 on a GPU)
    std::vector<at::Tensor> outputs;
    for (int64_t r = 0; r < count; ++r) {
      const int64_t slot_index = slots.slots[static_cast<size_t>(r)], keys = slots.tokens[static_cast<size_t>(r)] + length;
      outputs.push_back(attend(q.narrow(0, r, 1), cache.keys[slot_index].narrow(0, 0, keys).unsqueeze(0),
                               cache.values[slot_index].narrow(0, 0, keys).unsqueeze(0)));
    }
    o = at::cat(outputs, 0);
  }
  return o_proj.forward(o.reshape({count, length, heads * dim}));
}

}  // namespace lintime::layers
