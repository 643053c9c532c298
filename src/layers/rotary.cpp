// Rotary position embedding (see the header).
#include "layers/rotary.h"

#include "core/error.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace lintime::layers {

at::Tensor apply_rotary(const at::Tensor& x, double base, int64_t first_position) {
  LINTIME_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "apply_rotary: x must be [B, T, H, D] with D even, got ",
                x.sizes());
  const int64_t half = x.size(3) / 2;
  const auto compute = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto options = at::TensorOptions().dtype(compute).device(x.device());
  const at::Tensor inverse_frequency =
      at::pow(base, -at::arange(0, half, options) * (2.0 / static_cast<double>(x.size(3))));  // [D/2]
  return apply_rotary(x, inverse_frequency, first_position);
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& inverse_frequency, int64_t first_position) {
  LINTIME_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "apply_rotary: x must be [B, T, H, D] with D even, got ",
                x.sizes());
  const int64_t length = x.size(1), half = x.size(3) / 2;
  LINTIME_CHECK(inverse_frequency.dim() == 1 && inverse_frequency.size(0) == half,
                "apply_rotary: inverse_frequency must be [", half, "], got ", inverse_frequency.sizes());
  const auto compute = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto options = at::TensorOptions().dtype(compute).device(x.device());
  const at::Tensor positions = at::arange(first_position, first_position + length, options);  // [T]
  const at::Tensor angles =
      at::outer(positions, inverse_frequency.to(options)).view({1, length, 1, half});
  const at::Tensor cos = angles.cos(), sin = angles.sin();
  const at::Tensor xc = x.to(compute);
  const at::Tensor x1 = xc.narrow(3, 0, half), x2 = xc.narrow(3, half, half);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, 3).to(x.scalar_type());
}

at::Tensor apply_rotary_per_sequence(const at::Tensor& x, const at::Tensor& inverse_frequency,
                                     const at::Tensor& first_positions) {
  LINTIME_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "apply_rotary_per_sequence: x must be [B, T, H, D] with D even, got ",
                x.sizes());
  const int64_t batch = x.size(0), length = x.size(1), half = x.size(3) / 2;
  LINTIME_CHECK(inverse_frequency.dim() == 1 && inverse_frequency.size(0) == half,
                "apply_rotary_per_sequence: inverse_frequency must be [", half, "], got ", inverse_frequency.sizes());
  LINTIME_CHECK(first_positions.dim() == 1 && first_positions.size(0) == batch &&
                    first_positions.scalar_type() == at::kLong,
                "apply_rotary_per_sequence: first_positions must be int64 [", batch, "], got ",
                first_positions.scalar_type(), " ", first_positions.sizes());
  const auto compute = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto options = at::TensorOptions().dtype(compute).device(x.device());
  const at::Tensor positions =
      first_positions.to(options).unsqueeze(1) + at::arange(0, length, options).unsqueeze(0);  // [B, T]
  const at::Tensor angles =
      (positions.unsqueeze(2) * inverse_frequency.to(options).view({1, 1, half})).unsqueeze(2);  // [B, T, 1, D/2]
  const at::Tensor cos = angles.cos(), sin = angles.sin();
  const at::Tensor xc = x.to(compute);
  const at::Tensor x1 = xc.narrow(3, 0, half), x2 = xc.narrow(3, half, half);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, 3).to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> RotaryTable::table(int64_t end, at::ScalarType compute,
                                                     const c10::Device& device) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!cos_.defined() || cos_.size(0) < end || cos_.scalar_type() != compute || cos_.device() != device) {
    int64_t capacity = cos_.defined() ? cos_.size(0) : 0;
    capacity = std::max<int64_t>({end, 2 * capacity, 256});
    const auto options = at::TensorOptions().dtype(compute).device(device);
    const at::Tensor angles =
        at::outer(at::arange(0, capacity, options), inverse_frequency_.to(options));  // [capacity, D/2]
    if (cos_.defined()) retired_.insert(retired_.end(), {cos_, sin_});
    cos_ = angles.cos();
    sin_ = angles.sin();
  }
  return {cos_, sin_};
}

at::Tensor RotaryTable::rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(3) / 2;
  const at::Tensor xc = x.to(cos.scalar_type());
  const at::Tensor x1 = xc.narrow(3, 0, half), x2 = xc.narrow(3, half, half);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, 3).to(x.scalar_type());
}

at::Tensor RotaryTable::apply(const at::Tensor& x, int64_t first_position) const {
  LINTIME_CHECK(x.dim() == 4 && x.size(3) == 2 * inverse_frequency_.size(0), "RotaryTable: x must be [B, T, H, ",
                2 * inverse_frequency_.size(0), "], got ", x.sizes());
  LINTIME_CHECK(first_position >= 0, "RotaryTable: first_position must be >= 0, got ", first_position);
  const int64_t length = x.size(1), half = x.size(3) / 2;
  const auto [cos, sin] = table(first_position + length, x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat,
                                x.device());
  return rotate(x, cos.narrow(0, first_position, length).view({1, length, 1, half}),
                sin.narrow(0, first_position, length).view({1, length, 1, half}));
}

at::Tensor RotaryTable::apply_per_sequence(const at::Tensor& x, const at::Tensor& first_positions, int64_t end) const {
  LINTIME_CHECK(x.dim() == 4 && x.size(3) == 2 * inverse_frequency_.size(0), "RotaryTable: x must be [B, T, H, ",
                2 * inverse_frequency_.size(0), "], got ", x.sizes());
  LINTIME_CHECK(first_positions.dim() == 1 && first_positions.size(0) == x.size(0) &&
                    first_positions.scalar_type() == at::kLong && first_positions.device() == x.device(),
                "RotaryTable: first_positions must be int64 [", x.size(0), "] on x's device, got ",
                first_positions.scalar_type(), " ", first_positions.sizes(), " on ", first_positions.device());
  const int64_t batch = x.size(0), length = x.size(1), half = x.size(3) / 2;
  const auto [cos, sin] = table(end, x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat, x.device());
  const at::Tensor positions =
      (first_positions.unsqueeze(1) + at::arange(length, first_positions.options()).unsqueeze(0)).reshape({-1});
  return rotate(x, cos.index_select(0, positions).view({batch, length, 1, half}),
                sin.index_select(0, positions).view({batch, length, 1, half}));
}

at::Tensor rotary_inverse_frequencies(const RopeSettings& rope, int64_t head_dim) {
  LINTIME_CHECK(head_dim > 0 && head_dim % 2 == 0, "rotary_inverse_frequencies: head_dim must be even, got ", head_dim);
  const auto options = at::TensorOptions().dtype(at::kDouble);
  at::Tensor inverse = 1.0 / at::pow(rope.rope_theta, at::arange(0, head_dim, 2, options) / static_cast<double>(head_dim));
  if (rope.rope_type == "linear") return inverse / rope.factor;
  if (rope.rope_type != "llama3") return inverse;
  // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelength = old_context / rope.low_freq_factor;
  const double high_freq_wavelength = old_context / rope.high_freq_factor;
  const at::Tensor wavelength = 2.0 * M_PI / inverse;
  at::Tensor scaled = at::where(wavelength > low_freq_wavelength, inverse / rope.factor, inverse);
  const at::Tensor smooth = (old_context / wavelength - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  const at::Tensor smoothed = (1.0 - smooth) * scaled / rope.factor + smooth * scaled;
  const at::Tensor medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength);
  return at::where(medium, smoothed, scaled);
}

}  // namespace lintime::layers
