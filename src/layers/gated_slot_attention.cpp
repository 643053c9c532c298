// GatedSlotAttention forward: projections, optional short conv, feature maps, slot gates, the
// GSA recurrence (chunk for training and prefill, in-place step for decoding), SiLU, g_norm,
// o_proj. Gates are computed in the input dtype as fla does.
#include "layers/gated_slot_attention.h"

#include "core/error.h"
#include "ops/fused/inference_epilogues.h"
#include "core/tensor_checks.h"
#include "ops/register/ops.h"
#include "state/gsa_state.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace lintime::layers {

namespace {

at::Tensor feature_map(const at::Tensor& x, const std::string& name) {
  if (name == "relu") return at::relu(x);
  return at::silu(x);  // swish: x·sigmoid(x) in one kernel, rounded once as fla's swish
}

}  // namespace

GatedSlotAttention::Dims GatedSlotAttention::validated_dims(const GatedSlotAttentionOptions& options) {
  const char* who = "GatedSlotAttention";
  LINTIME_CHECK(options.hidden_size > 0, who, ": hidden_size must be positive, got ", options.hidden_size);
  LINTIME_CHECK(options.num_heads > 0, who, ": num_heads must be positive, got ", options.num_heads);
  const int64_t num_kv_heads = options.num_kv_heads.value_or(options.num_heads);
  LINTIME_CHECK(num_kv_heads > 0 && options.num_heads % num_kv_heads == 0, who,
                ": num_kv_heads must be positive and divide num_heads = ", options.num_heads, ", got ", num_kv_heads);
  // Bounds that keep every derived size within int64 (an absurd config is refused, not allocated).
  LINTIME_CHECK(options.num_slots > 0 && options.num_slots <= 65536, who, ": num_slots must lie in [1, 65536], got ",
                options.num_slots);
  LINTIME_CHECK(options.num_heads <= 65536, who, ": num_heads must be at most 65536, got ", options.num_heads);
  LINTIME_CHECK(options.hidden_size <= (1 << 20), who, ": hidden_size must be at most 1048576, got ", options.hidden_size);
  LINTIME_CHECK(options.expand_k > 0.0 && options.expand_v > 0.0 && options.expand_k <= 64 && options.expand_v <= 64,
                who, ": expand_k and expand_v must lie in (0, 64], got ", options.expand_k, " and ", options.expand_v);
  LINTIME_CHECK(options.gate_logit_normalizer > 0.0, who, ": gate_logit_normalizer must be positive, got ",
                options.gate_logit_normalizer);
  LINTIME_CHECK(options.feature_map == "swish" || options.feature_map == "relu", who,
                ": feature_map must be \"swish\" or \"relu\", got \"", options.feature_map, "\"");
  LINTIME_CHECK(!options.use_short_conv || options.conv_size >= 1, who, ": conv_size must be >= 1, got ",
                options.conv_size);
  // Python's int(hidden_size * expand) truncation, as fla.
  const auto key_dim = static_cast<int64_t>(static_cast<double>(options.hidden_size) * options.expand_k);
  const auto value_dim = static_cast<int64_t>(static_cast<double>(options.hidden_size) * options.expand_v);
  LINTIME_CHECK(key_dim % options.num_heads == 0, who, ": key_dim = hidden_size * expand_k = ", key_dim,
                " must be divisible by num_heads = ", options.num_heads);
  LINTIME_CHECK(value_dim % options.num_heads == 0, who, ": value_dim = hidden_size * expand_v = ", value_dim,
                " must be divisible by num_heads = ", options.num_heads);
  return {num_kv_heads, key_dim, value_dim, key_dim / options.num_heads, value_dim / options.num_heads};
}

GatedSlotAttention::GatedSlotAttention(const GatedSlotAttentionOptions& options, at::Generator& generator)
    : options_(options),
      dims_(validated_dims(options)),
      q_proj(options.hidden_size, dims_.key_dim, options.initializer_range, generator),
      k_proj(options.hidden_size, dims_.num_kv_heads * dims_.head_k_dim, options.initializer_range, generator),
      v_proj(options.hidden_size, dims_.num_kv_heads * dims_.head_v_dim, options.initializer_range, generator),
      f_proj(options.hidden_size, dims_.num_kv_heads * options.num_slots, options.initializer_range, generator),
      o_proj(dims_.value_dim, options.hidden_size, options.initializer_range, generator),
      g_norm(dims_.value_dim, options.norm_eps, options.elementwise_affine) {
  register_module("q_proj", q_proj);
  register_module("k_proj", k_proj);
  register_module("v_proj", v_proj);
  register_module("f_proj", f_proj);
  if (options_.use_short_conv) {
    q_conv1d = std::make_unique<ShortConvolution>(dims_.key_dim, options_.conv_size, options_.initializer_range, generator);
    k_conv1d = std::make_unique<ShortConvolution>(dims_.num_kv_heads * dims_.head_k_dim, options_.conv_size,
                                                  options_.initializer_range, generator);
    v_conv1d = std::make_unique<ShortConvolution>(dims_.num_kv_heads * dims_.head_v_dim, options_.conv_size,
                                                  options_.initializer_range, generator);
    register_module("q_conv1d", *q_conv1d);
    register_module("k_conv1d", *k_conv1d);
    register_module("v_conv1d", *v_conv1d);
  }
  register_module("g_norm", g_norm);
  register_module("o_proj", o_proj);
  place_adjacent({&q_proj, &k_proj, &v_proj, &f_proj});
}

void GatedSlotAttention::parameters_moved() { place_adjacent({&q_proj, &k_proj, &v_proj, &f_proj}); }

GatedSlotAttention::Features GatedSlotAttention::features(const at::Tensor& x, state::GsaLayerState* histories,
                                                           const std::optional<at::Tensor>& cu_seqlens,
                                                           bool defer_swish) const {
  const char* op = "GatedSlotAttention";
  check_shape(op, "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1);
  const int64_t heads = options_.num_heads, kv_heads = dims_.num_kv_heads, slots = options_.num_slots;

  // One product for the four projections when inferring (their weights lie back to back). Not
  // in training: ATen's silu and its backward on column views of one product ran unvectorised,
  // 12 ms more per step of GSA 1.3B on an H100 than the 6 ms of gradient adds it saved.
  const auto projections = linear_maps(x, {&q_proj, &k_proj, &v_proj, &f_proj}, /*join_under_autograd=*/false);
  at::Tensor q = projections[0];  // [B, T, HQ*K]
  at::Tensor k = projections[1];  // [B, T, H*K]
  at::Tensor v = projections[2];  // [B, T, H*V]
  if (options_.use_short_conv) {
    TORCH_CHECK(histories == nullptr || histories->conv_q.defined(),
                "GatedSlotAttention: the layer uses short convolutions but the state has no conv history");
    q = q_conv1d->forward(q, histories ? &histories->conv_q : nullptr, cu_seqlens);
    k = k_conv1d->forward(k, histories ? &histories->conv_k : nullptr, cu_seqlens);
    v = v_conv1d->forward(v, histories ? &histories->conv_v : nullptr, cu_seqlens);
  }
  const at::Tensor& f = projections[3];  // [B, T, H*M]

  Features out;  // q [B, T, HQ, K], k [B, T, H, K], v [B, T, H, V], g and s [B, T, H, M]
  if (options_.feature_map == "swish" && defer_swish) {
    out.q = q.view({batch, length, heads, dims_.head_k_dim});
    out.k = k.view({batch, length, kv_heads, dims_.head_k_dim});
    out.v = v.view({batch, length, kv_heads, dims_.head_v_dim});
    out.g = at::log_sigmoid(f.view({batch, length, kv_heads, slots})) / options_.gate_logit_normalizer;
    out.s = 1 - at::exp(out.g);
    out.swish_pending = true;
  } else if (options_.feature_map == "swish") {
    // swish on q, k, v and the gates from f (one kernel in inference on a GPU).
    auto activations = ops::gsa_activations(q, k, v, f, options_.gate_logit_normalizer);
    out.q = activations.q.view({batch, length, heads, dims_.head_k_dim});
    out.k = activations.k.view({batch, length, kv_heads, dims_.head_k_dim});
    out.v = activations.v.view({batch, length, kv_heads, dims_.head_v_dim});
    out.g = activations.g.view({batch, length, kv_heads, slots});
    out.s = activations.s.view({batch, length, kv_heads, slots});
  } else {
    out.q = feature_map(q.view({batch, length, heads, dims_.head_k_dim}), options_.feature_map);
    out.k = feature_map(k.view({batch, length, kv_heads, dims_.head_k_dim}), options_.feature_map);
    out.v = at::silu(v.view({batch, length, kv_heads, dims_.head_v_dim}));
    out.g = at::log_sigmoid(f.view({batch, length, kv_heads, slots})) / options_.gate_logit_normalizer;
    out.s = 1 - at::exp(out.g);
  }
  return out;
}

at::Tensor GatedSlotAttention::output(const at::Tensor& o) const {
  // g_norm(silu(o)) (one kernel in inference on a GPU).
  return o_proj.forward(g_norm.silu_forward(o.reshape({o.size(0), o.size(1), dims_.value_dim})));
}

at::Tensor GatedSlotAttention::forward(const at::Tensor& x, state::GsaLayerState* state,
                                       const std::optional<at::Tensor>& cu_seqlens) {
  // Training (no state, a gradient recorded): the swish goes inside the chunk's autograd function,
  // so that the graph keeps q, k, v once, not also their swish.
  const bool training = state == nullptr && at::GradMode::is_enabled();
  const Features in = features(x, state, cu_seqlens, /*defer_swish=*/training);
  at::Tensor o;  // [B, T, HQ, V]
  if (in.swish_pending) {
    o = ops::gsa_chunk_of_swish(in.q, in.k, in.v, in.s, in.g, scale(), cu_seqlens);
  } else if (state == nullptr) {
    o = ops::gsa_chunk(in.q, in.k, in.v, in.s, in.g, scale(), std::nullopt, std::nullopt, false, cu_seqlens).o;
  } else if (x.size(1) == 1 && !cu_seqlens.has_value()) {
    o = ops::gsa_step_(in.q.select(1, 0), in.k.select(1, 0), in.v.select(1, 0), in.s.select(1, 0), in.g.select(1, 0),
                       scale(), state->state_k, state->state_v)
            .unsqueeze(1);
  } else {
    auto result = ops::gsa_chunk(in.q, in.k, in.v, in.s, in.g, scale(), state->state_k, state->state_v, true, cu_seqlens);
    state->state_k = result.final_state_k;
    state->state_v = result.final_state_v;
    o = result.o;
  }
  return output(o);
}

at::Tensor GatedSlotAttention::forward_rows(const at::Tensor& x, state::GsaRows& rows) {
  state::GsaLayerState& slots = *rows.cache;
  const at::Tensor& index = rows.slots->rows;  // [B]: row b continues slot index[b]
  // The rows' convolution histories (a few tokens each) are gathered and written back.
  state::GsaLayerState histories;
  if (options_.use_short_conv) {
    histories.conv_q = slots.conv_q.index_select(0, index);
    histories.conv_k = slots.conv_k.index_select(0, index);
    histories.conv_v = slots.conv_v.index_select(0, index);
  }
  const Features in = features(x, &histories, std::nullopt);
  if (options_.use_short_conv) {
    slots.conv_q.index_copy_(0, index, histories.conv_q);
    slots.conv_k.index_copy_(0, index, histories.conv_k);
    slots.conv_v.index_copy_(0, index, histories.conv_v);
  }
  at::Tensor o;  // [B, T, HQ, V]
  if (x.size(1) == 1) {  // a decoding step: the kernel reads and writes each row's states where they lie
    o = ops::gsa_step_rows_(in.q.select(1, 0), in.k.select(1, 0), in.v.select(1, 0), in.s.select(1, 0),
                            in.g.select(1, 0), scale(), slots.state_k, slots.state_v, index)
            .unsqueeze(1);
  } else {  // a prefill chunk: the rows' states gathered (widened if kept narrower), continued and written back
    auto result = ops::gsa_chunk(in.q, in.k, in.v, in.s, in.g, scale(),
                                 slots.state_k.index_select(0, index).to(slots.compute_dtype),
                                 slots.state_v.index_select(0, index).to(slots.compute_dtype), true, std::nullopt);
    slots.state_k.index_copy_(0, index, result.final_state_k.to(slots.state_k.scalar_type()));
    slots.state_v.index_copy_(0, index, result.final_state_v.to(slots.state_v.scalar_type()));
    o = result.o;
  }
  return output(o);
}

state::GsaLayerState GatedSlotAttention::make_state(int64_t batch, const at::Device& device,
                                                    at::ScalarType dtype) const {
  const auto state_options = at::TensorOptions().device(device).dtype(compute_dtype(dtype));
  state::GsaLayerState result;
  result.state_k = at::zeros({batch, dims_.num_kv_heads, dims_.head_k_dim, options_.num_slots}, state_options);
  result.state_v = at::zeros({batch, dims_.num_kv_heads, options_.num_slots, dims_.head_v_dim}, state_options);
  if (options_.use_short_conv) {
    const auto conv_options = at::TensorOptions().device(device).dtype(dtype);
    const int64_t history = options_.conv_size - 1;
    result.conv_q = at::zeros({batch, history, dims_.key_dim}, conv_options);
    result.conv_k = at::zeros({batch, history, dims_.num_kv_heads * dims_.head_k_dim}, conv_options);
    result.conv_v = at::zeros({batch, history, dims_.num_kv_heads * dims_.head_v_dim}, conv_options);
  }
  return result;
}

int64_t GatedSlotAttention::state_bytes_per_sequence(const GatedSlotAttentionOptions& options) {
  const Dims dims = validated_dims(options);
  const int64_t slots = options.num_slots;
  int64_t elements = dims.num_kv_heads * (dims.head_k_dim * slots + slots * dims.head_v_dim);
  if (options.use_short_conv) {
    elements += (options.conv_size - 1) * (dims.key_dim + dims.num_kv_heads * (dims.head_k_dim + dims.head_v_dim));
  }
  return elements * 4;
}

int64_t GatedSlotAttention::parameter_count_for(const GatedSlotAttentionOptions& options) {
  const Dims dims = validated_dims(options);
  const int64_t d = options.hidden_size;
  const int64_t kv_k = dims.num_kv_heads * dims.head_k_dim, kv_v = dims.num_kv_heads * dims.head_v_dim;
  int64_t count = d * dims.key_dim + d * kv_k + d * kv_v + d * dims.num_kv_heads * options.num_slots +
                  dims.value_dim * d;
  if (options.elementwise_affine) count += dims.value_dim;
  if (options.use_short_conv) count += options.conv_size * (dims.key_dim + kv_k + kv_v);
  return count;
}

}  // namespace lintime::layers
