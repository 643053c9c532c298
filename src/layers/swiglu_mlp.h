// fla's GatedMLP with SwiGLU: down(silu(gate(x)) ⊙ up(x)), bias-free, the elementwise product
// computed in fp32 (fp64 for fp64 inputs). Checkpoint names mlp.{gate,up,down}_proj.weight.
#pragma once

#include "layers/linear.h"
#include "layers/module.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace lintime::layers {

class SwiGluMlp : public Module {
 public:
  // bias: Llama's mlp_bias (zero-initialised biases on the three projections).
  SwiGluMlp(int64_t hidden_size, int64_t intermediate_size, double std, at::Generator& generator,
            bool bias = false);

  // x [..., hidden_size] -> [..., hidden_size] in x's dtype.
  at::Tensor forward(const at::Tensor& x) const;

  // fla's rule: intermediate_size if given, else 256 · ceil(int(d · hidden_ratio · 2/3) / 256)
  // (5632 at d = 2048, hidden_ratio 4).
  static int64_t intermediate_size_for(int64_t hidden_size, double hidden_ratio,
                                       std::optional<int64_t> intermediate_size = std::nullopt);

  int64_t intermediate_size() const { return gate_proj.out_features(); }

  Linear gate_proj;  // [I, d]  gate and up weights lie back to back (place_adjacent)
  Linear up_proj;    // [I, d]
  Linear down_proj;  // [d, I]

 protected:
  void parameters_moved() override;
};

}  // namespace lintime::layers
