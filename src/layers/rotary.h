// Rotary position embedding in the half-split layout (GPT-NeoX, flash-attn's default,
// rotary_emb_interleaved = false): the head dim's first half x1 pairs with its second half x2,
//   x1' = x1 cos θ − x2 sin θ,  x2' = x2 cos θ + x1 sin θ,  θ_i = position · base^(−2i / D),
// over all D dims of the head, computed in fp32 (fp64 for fp64 inputs).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <mutex>
#include <vector>
#include <utility>
#include <string>

namespace lintime::layers {

// RoPE frequency settings as Hugging Face's config.json gives them (rope_theta, rope_scaling).
struct RopeSettings {
  double rope_theta = 10000.0;
  std::string rope_type = "default";
  double factor = 1.0;
  double low_freq_factor = 1.0;    // llama3
  double high_freq_factor = 4.0;   // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

// RoPE inverse frequencies [head_dim / 2] (fp64, CPU) of the settings, as Hugging Face's
// rope_type functions compute them ("default", "linear", "llama3").
at::Tensor rotary_inverse_frequencies(const RopeSettings& rope, int64_t head_dim);

// x [B, T, H, D] (D even) at positions first_position + t -> the rotated x in x's dtype.
at::Tensor apply_rotary(const at::Tensor& x, double base, int64_t first_position = 0);

// The same with given inverse frequencies [D/2] (rescaled ones, as Llama 3.1's): angles
// position · inverse_frequency in fp32 (fp64 for fp64 inputs), as Hugging Face's Llama.
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& inverse_frequency, int64_t first_position);

// The same with a first position per sequence: first_positions [B] (int64, x's device), so that
// sequences decoded together at different lengths (a server's batch) each get their own angles.
at::Tensor apply_rotary_per_sequence(const at::Tensor& x, const at::Tensor& inverse_frequency,
                                     const at::Tensor& first_positions);

// apply_rotary with the cos/sin of every position computed once and kept (grown by doubling):
// a decode step then costs a slice instead of recomputing the angles.
class RotaryTable {
 public:
  // inverse_frequency [D/2] (fp64 on the CPU: converted per use).
  explicit RotaryTable(at::Tensor inverse_frequency) : inverse_frequency_(std::move(inverse_frequency)) {}

  // x [B, T, H, D] at positions first_position + t -> rotated x in x's dtype; the same numbers
  // as apply_rotary(x, inverse_frequency, first_position).
  at::Tensor apply(const at::Tensor& x, int64_t first_position) const;
  // The same with a first position per sequence: first_positions [B] (int64, x's device), each
  // below `end` - T + 1 (the table is grown to `end`, a host value, without reading the device).
  at::Tensor apply_per_sequence(const at::Tensor& x, const at::Tensor& first_positions, int64_t end) const;

  const at::Tensor& inverse_frequency() const { return inverse_frequency_; }

 private:
  // cos and sin [capacity ≥ end, D/2] in `compute` on `device`.
  std::pair<at::Tensor, at::Tensor> table(int64_t end, at::ScalarType compute, const c10::Device& device) const;
  static at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

  at::Tensor inverse_frequency_;
  mutable std::mutex mutex_;
  mutable at::Tensor cos_, sin_;  // [capacity, D/2] in the compute dtype on the last device used
  // Tables replaced by larger ones stay allocated: a recorded CUDA graph (a replayed decode step)
  // may still read them. Sizes at least double, so together they take less room than the current one.
  mutable std::vector<at::Tensor> retired_;
};

}  // namespace lintime::layers
