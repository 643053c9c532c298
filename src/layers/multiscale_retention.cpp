// MultiScaleRetention forward: projections, rotary positions, the retention recurrence as GLA
// with a constant per-head log gate (chunk for training and prefill, in-place step for
// decoding), per-head RMSNorm with the optional swish output gate, output projection.
#include "layers/multiscale_retention.h"

#include "core/error.h"
#include "core/tensor_checks.h"
#include "layers/rotary.h"
#include "ops/register/ops.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lintime::layers {

MultiScaleRetention::Dims MultiScaleRetention::validated_dims(const MultiScaleRetentionOptions& options) {
  const char* who = "MultiScaleRetention";
  LINTIME_CHECK(options.hidden_size > 0 && options.hidden_size <= (1 << 20), who,
                ": hidden_size must lie in [1, 1048576], got ", options.hidden_size);
  LINTIME_CHECK(options.num_heads > 0 && options.num_heads <= 65536, who, ": num_heads must lie in [1, 65536], got ",
                options.num_heads);
  LINTIME_CHECK(options.expand_k > 0.0 && options.expand_v > 0.0 && options.expand_k <= 64 && options.expand_v <= 64,
                who, ": expand_k and expand_v must lie in (0, 64], got ", options.expand_k, " and ", options.expand_v);
  LINTIME_CHECK(!options.scale.has_value() || *options.scale > 0.0, who, ": scale must be positive, got ",
                options.scale.value_or(0.0));
  LINTIME_CHECK(options.rotary_base > 1.0, who, ": rotary_base must be > 1, got ", options.rotary_base);
  // Python's int(hidden_size * expand) truncation, as fla.
  const auto key_dim = static_cast<int64_t>(static_cast<double>(options.hidden_size) * options.expand_k);
  const auto value_dim = static_cast<int64_t>(static_cast<double>(options.hidden_size) * options.expand_v);
  LINTIME_CHECK(key_dim > 0 && key_dim % options.num_heads == 0, who, ": key_dim = hidden_size * expand_k = ", key_dim,
                " must be a positive multiple of num_heads = ", options.num_heads);
  LINTIME_CHECK(value_dim > 0 && value_dim % options.num_heads == 0, who, ": value_dim = hidden_size * expand_v = ",
                value_dim, " must be a positive multiple of num_heads = ", options.num_heads);
  LINTIME_CHECK((key_dim / options.num_heads) % 2 == 0, who, ": head_k_dim = ", key_dim / options.num_heads,
                " must be even (the rotary embedding pairs its halves)");
  return {key_dim, value_dim, key_dim / options.num_heads, value_dim / options.num_heads};
}

MultiScaleRetention::MultiScaleRetention(const MultiScaleRetentionOptions& options, at::Generator& generator)
    : options_(options),
      dims_(validated_dims(options)),
      q_proj(options.hidden_size, dims_.key_dim, options.initializer_range, generator),
      k_proj(options.hidden_size, dims_.key_dim, options.initializer_range, generator),
      v_proj(options.hidden_size, dims_.value_dim, options.initializer_range, generator),
      g_norm(dims_.head_v_dim, options.norm_eps),
      o_proj(dims_.value_dim, options.hidden_size, options.initializer_range, generator) {
  RopeSettings rope;
  rope.rope_theta = options.rotary_base;
  inverse_frequency_ = rotary_inverse_frequencies(rope, dims_.head_k_dim);
  register_module("q_proj", q_proj);
  register_module("k_proj", k_proj);
  register_module("v_proj", v_proj);
  if (options_.use_output_gate) {
    g_proj = std::make_unique<Linear>(options.hidden_size, dims_.value_dim, options.initializer_range, generator);
    register_module("g_proj", *g_proj);
  }
  register_module(options_.use_output_gate ? "g_norm_swish_gate" : "g_norm", g_norm);
  register_module("o_proj", o_proj);
}

double MultiScaleRetention::scale() const {
  return options_.scale.value_or(1.0 / std::sqrt(static_cast<double>(dims_.head_k_dim)));
}

at::Tensor MultiScaleRetention::log_decays(const at::TensorOptions& options) const {
  const at::Tensor heads = at::arange(options_.num_heads, options);
  return at::log1p(-at::pow(2.0, -5.0 - heads));
}

at::Tensor MultiScaleRetention::forward(const at::Tensor& x, state::RetentionLayerState* state) {
  check_shape("MultiScaleRetention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), heads = options_.num_heads;
  const int64_t key = dims_.head_k_dim, value = dims_.head_v_dim;
  if (state != nullptr) {
    check_shape("MultiScaleRetention", "state", state->state, {{"B", batch}, {"H", heads}, {"K", key}, {"V", value}});
    check_shape("MultiScaleRetention", "positions", state->positions, {{"B", batch}});
  }
  at::Tensor q = q_proj.forward(x).view({batch, length, heads, key});
  at::Tensor k = k_proj.forward(x).view({batch, length, heads, key});
  if (state == nullptr) {
    q = apply_rotary(q, inverse_frequency_, 0);
    k = apply_rotary(k, inverse_frequency_, 0);
  } else {
    q = apply_rotary_per_sequence(q, inverse_frequency_, state->positions);
    k = apply_rotary_per_sequence(k, inverse_frequency_, state->positions);
  }
  const at::Tensor v = v_proj.forward(x).view({batch, length, heads, value});
  // The constant gate in fp32 (fp64 for fp64 models), as fla's g_gamma: γ close to 1 would lose
  // most of its distance from 1 in bf16.
  const auto gate_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor log_gamma = log_decays(at::TensorOptions().dtype(gate_dtype).device(x.device()));

  const at::Tensor g = log_gamma.view({1, 1, heads, 1}).expand({batch, length, heads, key}).contiguous();
  at::Tensor o = ops::gla_run(q, k, v, g, /*gate_on_value=*/false, scale(), state ? &state->state : nullptr);
  if (state != nullptr) state->positions.add_(length);

  o = g_norm.forward(o);
  if (g_proj) o = o * at::silu(g_proj->forward(x).view({batch, length, heads, value}));
  return o_proj.forward(o.reshape({batch, length, dims_.value_dim}));
}

state::RetentionLayerState MultiScaleRetention::make_state(int64_t batch, const at::Device& device,
                                                           at::ScalarType dtype) const {
  state::RetentionLayerState result;
  result.state = at::zeros({batch, options_.num_heads, dims_.head_k_dim, dims_.head_v_dim},
                           at::TensorOptions().device(device).dtype(compute_dtype(dtype)));
  result.positions = at::zeros({batch}, at::TensorOptions().device(device).dtype(at::kLong));
  return result;
}

int64_t MultiScaleRetention::state_bytes_per_sequence(const MultiScaleRetentionOptions& options) {
  const Dims dims = validated_dims(options);
  return options.num_heads * dims.head_k_dim * dims.head_v_dim * 4;
}

int64_t MultiScaleRetention::parameter_count_for(const MultiScaleRetentionOptions& options) {
  const Dims dims = validated_dims(options);
  const int64_t d = options.hidden_size;
  int64_t count = 2 * d * dims.key_dim + d * dims.value_dim;  // q, k, v
  if (options.use_output_gate) count += d * dims.value_dim;  // g_proj
  count += dims.head_v_dim;                                   // the norm
  count += dims.value_dim * d;                                // o_proj
  return count;
}

}  // namespace lintime::layers
