// The gated MLP of the BASED language model (flash-attn's GatedMlp with SwiGLU, based.md §4):
//   y, gate = split(fc1 x)            fc1: d → 2 H, the first half y, the second the gate
//   out     = fc2(y ⊙ silu(gate))     fc2: H → d
// Checkpoint names "fc1", "fc2"; biases optional (mlp_fc1_bias / mlp_fc2_bias in config.json).
#pragma once

#include "layers/linear.h"
#include "layers/module.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::layers {

class GatedMlp : public Module {
 public:
  // Weights N(0, std) (fc2 N(0, fc2_std)), zero biases.
  GatedMlp(int64_t hidden_size, int64_t inner_size, double std, double fc2_std, at::Generator& generator,
           bool fc1_bias = false, bool fc2_bias = false);

  // x [..., d] -> [..., d]
  at::Tensor forward(const at::Tensor& x) const;

  int64_t inner_size() const { return inner_size_; }

 private:
  int64_t inner_size_;

 public:
  Linear fc1, fc2;
};

}  // namespace lintime::layers
