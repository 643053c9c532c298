// Hgrn2Attention forward: projections, the forget gate and its tied key, the GLA recurrence
// through the registered ops (chunk for training and prefill, in-place step for decoding), one
// RMSNorm over the width, output projection.
#include "layers/hgrn2_attention.h"

#include "core/error.h"
#include "core/tensor_checks.h"
#include "ops/register/ops.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lintime::layers {

Hgrn2Attention::Dims Hgrn2Attention::validated_dims(const Hgrn2Options& options) {
  const char* who = "Hgrn2Attention";
  const int64_t d = options.hidden_size;
  LINTIME_CHECK(d > 0 && d <= (1 << 20), who, ": hidden_size must lie in [1, 1048576], got ", d);
  int64_t heads = options.num_heads;
  if (options.expand_ratio) {
    const int64_t ratio = *options.expand_ratio;
    LINTIME_CHECK(ratio >= 1 && ratio <= d && d % ratio == 0, who, ": expand_ratio must divide hidden_size = ", d,
                  ", got ", ratio);
    heads = d / ratio;
  }
  LINTIME_CHECK(heads >= 1 && heads <= d && d % heads == 0, who, ": num_heads must divide hidden_size = ", d,
                ", got ", heads);
  // fla: forget_dim = num_heads · expand_ratio = d, head_f_dim = expand_ratio, head_i_dim = d / H.
  return {heads, d / heads, d / heads};
}

Hgrn2Attention::Hgrn2Attention(const Hgrn2Options& options, at::Generator& generator)
    : options_(options),
      dims_(validated_dims(options)),
      q_proj(options.hidden_size, dims_.num_heads * dims_.head_f_dim, options.initializer_range, generator),
      f_proj(options.hidden_size, dims_.num_heads * dims_.head_f_dim, options.initializer_range, generator),
      i_proj(options.hidden_size, options.hidden_size, options.initializer_range, generator),
      g_norm(options.hidden_size, options.norm_eps),
      o_proj(options.hidden_size, options.hidden_size, options.initializer_range, generator) {
  register_module("q_proj", q_proj);
  register_module("f_proj", f_proj);
  register_module("i_proj", i_proj);
  register_module("g_norm", g_norm);
  register_module("o_proj", o_proj);
}

double Hgrn2Attention::scale() const { return 1.0 / std::sqrt(static_cast<double>(dims_.head_f_dim)); }

at::Tensor Hgrn2Attention::forward(const at::Tensor& x, at::Tensor* state) {
  check_shape("Hgrn2Attention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), heads = dims_.num_heads;
  const int64_t forget = dims_.head_f_dim, input = dims_.head_i_dim;
  const at::Tensor q = at::silu(q_proj.forward(x)).view({batch, length, heads, forget});
  const at::Tensor g = at::log_sigmoid(f_proj.forward(x));
  const at::Tensor k = (1.0 - g.exp()).view({batch, length, heads, forget});
  const at::Tensor gk = g.view({batch, length, heads, forget});
  const at::Tensor v = i_proj.forward(x).view({batch, length, heads, input});

  if (state != nullptr) {
    check_shape("Hgrn2Attention", "state", *state, {{"B", batch}, {"H", heads}, {"F", forget}, {"I", input}});
  }
  const at::Tensor o = ops::gla_run(q, k, v, gk, /*gate_on_value=*/false, scale(), state);  // [B, T, H, I]
  return o_proj.forward(g_norm.forward(o.reshape({batch, length, options_.hidden_size})));
}

at::Tensor Hgrn2Attention::make_state(int64_t batch, const at::Device& device, at::ScalarType dtype) const {
  return at::zeros({batch, dims_.num_heads, dims_.head_f_dim, dims_.head_i_dim},
                   at::TensorOptions().device(device).dtype(compute_dtype(dtype)));
}

int64_t Hgrn2Attention::state_bytes_per_sequence(const Hgrn2Options& options) {
  const Dims dims = validated_dims(options);
  return dims.num_heads * dims.head_f_dim * dims.head_i_dim * 4;
}

int64_t Hgrn2Attention::parameter_count_for(const Hgrn2Options& options) {
  const int64_t d = options.hidden_size;
  validated_dims(options);
  return 4 * d * d + d;  // q, f, i, o projections (d × d each: forget_dim = d) and the norm
}

}  // namespace lintime::layers
