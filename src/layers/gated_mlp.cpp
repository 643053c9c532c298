// BASED's gated MLP (see the header).
#include "layers/gated_mlp.h"

#include "core/error.h"

#include <ATen/ATen.h>

namespace lintime::layers {

GatedMlp::GatedMlp(int64_t hidden_size, int64_t inner_size, double std, double fc2_std, at::Generator& generator,
                   bool fc1_bias, bool fc2_bias)
    : inner_size_(inner_size),
      fc1(hidden_size, 2 * inner_size, std, generator, fc1_bias),
      fc2(inner_size, hidden_size, fc2_std, generator, fc2_bias) {
  LINTIME_CHECK(inner_size > 0, "GatedMlp: inner size must be positive, got ", inner_size);
  register_module("fc1", fc1);
  register_module("fc2", fc2);
}

at::Tensor GatedMlp::forward(const at::Tensor& x) const {
  const auto halves = fc1.forward(x).chunk(2, -1);  // (y, gate)
  return fc2.forward(halves[0] * at::silu(halves[1]));
}

}  // namespace lintime::layers
