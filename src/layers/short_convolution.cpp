// fla's ShortConvolution: weights and the decode state around ops::short_convolution.
#include "layers/short_convolution.h"

#include "core/error.h"
#include "core/tensor_checks.h"
#include "ops/register/ops.h"

#include <ATen/ATen.h>

namespace lintime::layers {

ShortConvolution::ShortConvolution(int64_t hidden_size, int64_t kernel_size, double std,
                                   at::Generator& generator, bool bias, const std::string& activation)
    : hidden_size_(hidden_size), kernel_size_(kernel_size) {
  LINTIME_CHECK(hidden_size > 0, "ShortConvolution: hidden_size must be positive, got ", hidden_size);
  LINTIME_CHECK(kernel_size >= 1, "ShortConvolution: kernel_size (conv_size) must be >= 1, got ", kernel_size);
  LINTIME_CHECK(activation == "silu" || activation == "swish" || activation.empty(),
                "ShortConvolution: activation must be \"silu\", \"swish\" or empty, got \"", activation, "\"");
  silu_ = !activation.empty();
  weight = new_parameter({hidden_size, 1, kernel_size});
  init_normal(weight, std, generator);
  register_parameter("weight", weight);
  if (bias) {
    this->bias = new_parameter({hidden_size});
    init_constant(this->bias, 0.0);
    register_parameter("bias", this->bias);
  }
}

at::Tensor ShortConvolution::forward(const at::Tensor& x, at::Tensor* conv_state,
                                     const std::optional<at::Tensor>& cu_seqlens) const {
  check_shape("ShortConvolution", "x", x, {{"B", -1}, {"T", -1}, {"D", hidden_size_}});
  const std::optional<at::Tensor> b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  if (conv_state == nullptr) {
    return std::get<0>(ops::short_convolution(x, weight, b, silu_, std::nullopt, false, cu_seqlens));
  }
  LINTIME_CHECK(!cu_seqlens.has_value(), "ShortConvolution: cu_seqlens with a conv state is not supported");
  auto [y, final_state] = ops::short_convolution(x, weight, b, silu_, *conv_state, true);
  conv_state->copy_(final_state.detach());
  return y;
}

}  // namespace lintime::layers
