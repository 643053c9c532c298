// Rotary position embedding (see the header).
#include "layers/rotary.h"

#include "core/error.h"

#include <ATen/ATen.h>

namespace lintime::layers {

at::Tensor apply_rotary(const at::Tensor& x, double base, int64_t first_position) {
  LINTIME_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "apply_rotary: x must be [B, T, H, D] with D even, got ",
                x.sizes());
  const int64_t length = x.size(1), half = x.size(3) / 2;
  const auto compute = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto options = at::TensorOptions().dtype(compute).device(x.device());
  const at::Tensor inverse_frequency =
      at::pow(base, -at::arange(0, half, options) * (2.0 / static_cast<double>(x.size(3))));  // [D/2]
  const at::Tensor positions = at::arange(first_position, first_position + length, options);      // [T]
  const at::Tensor angles = at::outer(positions, inverse_frequency).view({1, length, 1, half});
  const at::Tensor cos = angles.cos(), sin = angles.sin();
  const at::Tensor xc = x.to(compute);
  const at::Tensor x1 = xc.narrow(3, 0, half), x2 = xc.narrow(3, half, half);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, 3).to(x.scalar_type());
}

}  // namespace lintime::layers
