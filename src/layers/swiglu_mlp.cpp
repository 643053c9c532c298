// SwiGLU MLP (fla GatedMLP, hidden_act "swish").
#include "layers/swiglu_mlp.h"

#include "core/error.h"
#include "core/tensor_checks.h"
#include "ops/fused/inference_epilogues.h"

#include <ATen/ATen.h>

namespace lintime::layers {

SwiGluMlp::SwiGluMlp(int64_t hidden_size, int64_t intermediate_size, double std, at::Generator& generator,
                     bool bias)
    : gate_proj(hidden_size, intermediate_size, std, generator, bias),
      up_proj(hidden_size, intermediate_size, std, generator, bias),
      down_proj(intermediate_size, hidden_size, std, generator, bias) {
  register_module("gate_proj", gate_proj);
  register_module("up_proj", up_proj);
  register_module("down_proj", down_proj);
  place_adjacent({&gate_proj, &up_proj});
}

void SwiGluMlp::parameters_moved() { place_adjacent({&gate_proj, &up_proj}); }

at::Tensor SwiGluMlp::forward(const at::Tensor& x) const {
  const auto gate_up = linear_maps(x, {&gate_proj, &up_proj});  // one product when inferring
  // silu(gate) · up in fp32, rounded once (one kernel forward on a GPU), then down_proj; in
  // training the graph keeps gate and up in their dtype and not the product (ops::swiglu_linear).
  const at::Tensor& bias = down_proj.bias;
  return ops::swiglu_linear(gate_up[0], gate_up[1], down_proj.weight,
                            bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt);
}

int64_t SwiGluMlp::intermediate_size_for(int64_t hidden_size, double hidden_ratio,
                                         std::optional<int64_t> intermediate_size) {
  if (intermediate_size.has_value()) {
    LINTIME_CHECK(*intermediate_size > 0, "SwiGluMlp: intermediate_size must be positive, got ", *intermediate_size);
    return *intermediate_size;
  }
  LINTIME_CHECK(hidden_ratio > 0.0, "SwiGluMlp: hidden_ratio must be positive, got ", hidden_ratio);
  const auto raw = static_cast<int64_t>(static_cast<double>(hidden_size) * hidden_ratio * 2.0 / 3.0);
  return 256 * ((raw + 255) / 256);
}

}  // namespace lintime::layers
