// BASED's LM short-convolution mixer (see the header).
#include "layers/gated_conv.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lintime::layers {

GatedConv::ConvHolder::ConvHolder(int64_t channels, int64_t kernel_size, at::Generator& generator)
    : conv(channels, kernel_size, 0.0, generator, /*bias=*/false, /*activation=*/"") {
  // torch's Conv1d default for a depthwise conv (fan_in = k): U(±1/√k).
  const double bound = 1.0 / std::sqrt(static_cast<double>(kernel_size));
  init_uniform(conv.weight, bound, generator);
  register_module("conv", conv);
}

GatedConv::GatedConv(int64_t hidden_size, int64_t kernel_size, double std, double out_std,
                     at::Generator& generator, bool bias)
    : hidden_size_(hidden_size),
      in_proj(hidden_size, 4 * hidden_size, std, generator, bias),
      conv_holder(2 * hidden_size, kernel_size, generator),
      out_proj(2 * hidden_size, hidden_size, out_std, generator, bias) {
  register_module("in_proj", in_proj);
  register_module("conv", conv_holder);
  register_module("out_proj", out_proj);
}

at::Tensor GatedConv::forward(const at::Tensor& x, at::Tensor* conv_state) const {
  check_shape("GatedConv", "x", x, {{"B", -1}, {"T", -1}, {"d", hidden_size_}});
  const auto halves = in_proj.forward(x).chunk(2, -1);  // (u1: conv input, u2: gate)
  const at::Tensor c = conv_holder.conv.forward(halves[0], conv_state).to(x.scalar_type());
  return out_proj.forward(at::silu(c) * halves[1]);
}

}  // namespace lintime::layers
