// LayerNorm through at::layer_norm in the compute dtype.
#include "layers/layer_norm.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

namespace lintime::layers {

LayerNorm::LayerNorm(int64_t hidden_size, double eps) : hidden_size_(hidden_size), eps_(eps) {
  LINTIME_CHECK(hidden_size > 0, "LayerNorm: hidden_size must be positive, got ", hidden_size);
  LINTIME_CHECK(eps >= 0.0, "LayerNorm: eps must be non-negative, got ", eps);
  weight = new_parameter({hidden_size});
  init_constant(weight, 1.0);
  bias = new_parameter({hidden_size});
  init_constant(bias, 0.0);
  register_parameter("weight", weight);
  register_parameter("bias", bias);
}

at::Tensor LayerNorm::forward(const at::Tensor& x) const {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == hidden_size_, "LayerNorm: x must have last dim ", hidden_size_,
              ", got shape ", shape_string(x.sizes()));
  const auto compute = compute_dtype(x.scalar_type());
  return at::layer_norm(x.to(compute), {hidden_size_}, weight.to(compute), bias.to(compute), eps_)
      .to(x.scalar_type());
}

}  // namespace lintime::layers
