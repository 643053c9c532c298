// Rotary position embedding in the half-split layout (GPT-NeoX, flash-attn's default,
// rotary_emb_interleaved = false): the head dim's first half x1 pairs with its second half x2,
//   x1' = x1 cos θ − x2 sin θ,  x2' = x2 cos θ + x1 sin θ,  θ_i = position · base^(−2i / D),
// over all D dims of the head, computed in fp32 (fp64 for fp64 inputs).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::layers {

// x [B, T, H, D] (D even) at positions first_position + t -> the rotated x in x's dtype.
at::Tensor apply_rotary(const at::Tensor& x, double base, int64_t first_position = 0);

}  // namespace lintime::layers
