// GatedLinearAttention forward: projections, low-rank log-sigmoid key gates, the GLA recurrence
// through the registered ops (chunk for training and prefill, in-place step for decoding),
// per-head RMSNorm with optional swish output gate, output projection.
#include "layers/gated_linear_attention.h"

#include "core/error.h"
#include "core/tensor_checks.h"
#include "ops/register/ops.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lintime::layers {

namespace {

// fla applies the feature map after the gates are formed, to q and k only.
at::Tensor apply_feature_map(const at::Tensor& x, const std::optional<std::string>& map) {
  if (!map) return x;
  return *map == "relu" ? at::relu(x) : at::silu(x);
}

}  // namespace

GatedLinearAttention::LowRankProjection::LowRankProjection(int64_t in_features, int64_t rank,
                                                           int64_t out_features, double std,
                                                           at::Generator& generator)
    : down(in_features, rank, std, generator), up(rank, out_features, std, generator, /*bias=*/true) {
  register_module("0", down);
  register_module("1", up);
}

GatedLinearAttention::Dims GatedLinearAttention::validated_dims(const GatedLinearAttentionOptions& options) {
  const char* who = "GatedLinearAttention";
  LINTIME_CHECK(options.hidden_size > 0, who, ": hidden_size must be positive, got ", options.hidden_size);
  LINTIME_CHECK(options.num_heads > 0, who, ": num_heads must be positive, got ", options.num_heads);
  // Bounds that keep every derived size within int64 (an absurd config is refused, not allocated).
  LINTIME_CHECK(options.num_heads <= 65536, who, ": num_heads must be at most 65536, got ", options.num_heads);
  LINTIME_CHECK(options.hidden_size <= (1 << 20), who, ": hidden_size must be at most 1048576, got ", options.hidden_size);
  LINTIME_CHECK(options.expand_k > 0.0 && options.expand_v > 0.0 && options.expand_k <= 64 && options.expand_v <= 64,
                who, ": expand_k and expand_v must lie in (0, 64], got ", options.expand_k, " and ", options.expand_v);
  LINTIME_CHECK(options.gate_low_rank_dim > 0, who, ": gate_low_rank_dim must be positive, got ",
                options.gate_low_rank_dim);
  LINTIME_CHECK(options.gate_logit_normalizer > 0.0, who, ": gate_logit_normalizer must be positive, got ",
                options.gate_logit_normalizer);
  LINTIME_CHECK(!options.scale.has_value() || *options.scale > 0.0, who, ": scale must be positive, got ",
                options.scale.value_or(0.0));
  LINTIME_CHECK(!options.feature_map || *options.feature_map == "relu" || *options.feature_map == "swish" ||
                    *options.feature_map == "silu",
                who, ": feature_map must be null, \"relu\", \"swish\" or \"silu\", got \"",
                options.feature_map.value_or(""), "\"");
  LINTIME_CHECK(options.norm_name == "g_norm" || options.norm_name == "g_norm_swish_gate", who,
                ": norm_name must be \"g_norm\" or \"g_norm_swish_gate\", got \"", options.norm_name, "\"");
  // Python's int(hidden_size * expand) truncation, as fla.
  const auto key_dim = static_cast<int64_t>(static_cast<double>(options.hidden_size) * options.expand_k);
  const auto value_dim = static_cast<int64_t>(static_cast<double>(options.hidden_size) * options.expand_v);
  LINTIME_CHECK(key_dim > 0 && key_dim % options.num_heads == 0, who, ": key_dim = hidden_size * expand_k = ",
                key_dim, " must be a positive multiple of num_heads = ", options.num_heads);
  LINTIME_CHECK(value_dim > 0 && value_dim % options.num_heads == 0, who,
                ": value_dim = hidden_size * expand_v = ", value_dim, " must be a positive multiple of num_heads = ",
                options.num_heads);
  return {key_dim, value_dim, key_dim / options.num_heads, value_dim / options.num_heads};
}

GatedLinearAttention::GatedLinearAttention(const GatedLinearAttentionOptions& options, at::Generator& generator)
    : options_(options),
      dims_(validated_dims(options)),
      q_proj(options.hidden_size, dims_.key_dim, options.initializer_range, generator),
      k_proj(options.hidden_size, dims_.key_dim, options.initializer_range, generator),
      v_proj(options.hidden_size, dims_.value_dim, options.initializer_range, generator),
      gk_proj(options.hidden_size, options.gate_low_rank_dim, dims_.key_dim, options.initializer_range, generator),
      g_norm(dims_.head_v_dim, options.norm_eps),
      o_proj(dims_.value_dim, options.hidden_size, options.initializer_range, generator) {
  register_module("q_proj", q_proj);
  register_module("k_proj", k_proj);
  register_module("v_proj", v_proj);
  register_module("gk_proj", gk_proj);
  if (options_.use_output_gate) {
    g_proj = std::make_unique<Linear>(options.hidden_size, dims_.value_dim, options.initializer_range, generator);
    register_module("g_proj", *g_proj);
  }
  register_module(options_.norm_name, g_norm);
  register_module("o_proj", o_proj);
}

double GatedLinearAttention::scale() const {
  return options_.scale.value_or(1.0 / std::sqrt(static_cast<double>(dims_.head_k_dim)));
}

at::Tensor GatedLinearAttention::forward(const at::Tensor& x, at::Tensor* state) {
  check_shape("GatedLinearAttention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), heads = options_.num_heads;
  const at::Tensor q = apply_feature_map(q_proj.forward(x), options_.feature_map)
                          .view({batch, length, heads, dims_.head_k_dim});  // [B, T, H, K]
  const at::Tensor k = apply_feature_map(k_proj.forward(x), options_.feature_map)
                          .view({batch, length, heads, dims_.head_k_dim});  // [B, T, H, K]
  const at::Tensor v = v_proj.forward(x).view({batch, length, heads, dims_.head_v_dim});  // [B, T, H, V]
  const at::Tensor gk = at::log_sigmoid(gk_proj.forward(x)).view({batch, length, heads, dims_.head_k_dim}) /
                        options_.gate_logit_normalizer;  // [B, T, H, K]

  if (state != nullptr) {
    check_shape("GatedLinearAttention", "state", *state,
                {{"B", batch}, {"H", heads}, {"K", dims_.head_k_dim}, {"V", dims_.head_v_dim}});
  }
  at::Tensor o = ops::gla_run(q, k, v, gk, /*gate_on_value=*/false, scale(), state);  // [B, T, H, V]

  o = g_norm.forward(o);
  if (g_proj) {
    const at::Tensor gate = g_proj->forward(x).view({batch, length, heads, dims_.head_v_dim});
    o = o * at::silu(gate);
  }
  return o_proj.forward(o.reshape({batch, length, dims_.value_dim}));
}

at::Tensor GatedLinearAttention::make_state(int64_t batch, const at::Device& device, at::ScalarType dtype) const {
  return at::zeros({batch, options_.num_heads, dims_.head_k_dim, dims_.head_v_dim},
                   at::TensorOptions().device(device).dtype(compute_dtype(dtype)));
}

int64_t GatedLinearAttention::state_bytes_per_sequence(const GatedLinearAttentionOptions& options) {
  const Dims dims = validated_dims(options);
  return options.num_heads * dims.head_k_dim * dims.head_v_dim * 4;
}

int64_t GatedLinearAttention::parameter_count_for(const GatedLinearAttentionOptions& options) {
  const Dims dims = validated_dims(options);
  const int64_t d = options.hidden_size, rank = options.gate_low_rank_dim;
  int64_t count = 2 * d * dims.key_dim + d * dims.value_dim;  // q, k, v
  count += d * rank + rank * dims.key_dim + dims.key_dim;    // gk_proj
  if (options.use_output_gate) count += d * dims.value_dim;  // g_proj
  count += dims.head_v_dim;                                   // g_norm
  count += dims.value_dim * d;                                // o_proj
  return count;
}

}  // namespace lintime::layers
