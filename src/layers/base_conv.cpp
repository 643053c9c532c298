// BaseConv forward: gated short convolution with an inner residual.
#include "layers/base_conv.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <cmath>

namespace lintime::layers {

BaseConv::BaseConv(int64_t hidden_size, int64_t kernel_size, double std, at::Generator& generator)
    : hidden_size_(hidden_size),
      kernel_size_(kernel_size),
      projection(hidden_size, hidden_size, std, generator, /*bias=*/true),
      conv(hidden_size, kernel_size, std, generator, /*bias=*/true, /*activation=*/"") {
  const double bound = 1.0 / std::sqrt(static_cast<double>(kernel_size));
  init_uniform(conv.weight, bound, generator);
  init_uniform(conv.bias, bound, generator);
  register_module("projection", projection);
  register_module("conv", conv);
}

at::Tensor BaseConv::forward(const at::Tensor& u, at::Tensor* conv_state) const {
  check_shape("BaseConv", "u", u, {{"B", -1}, {"T", -1}, {"d", hidden_size_}});
  return conv.forward(u, conv_state) * projection.forward(u) + u;
}

int64_t BaseConv::state_bytes_per_sequence(int64_t hidden_size, int64_t kernel_size) {
  return hidden_size * kernel_size * 4;
}

int64_t BaseConv::parameter_count_for(int64_t hidden_size, int64_t kernel_size) {
  return hidden_size * hidden_size + hidden_size + hidden_size * kernel_size + hidden_size;
}

}  // namespace lintime::layers
