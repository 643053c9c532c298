// LayerNorm as torch.nn.LayerNorm over the last dim: y = (x − mean) / sqrt(var + eps) · w + b
// (biased variance), weight ones and bias zeros at init. Computed in fp32 (fp64 for fp64
// inputs) and returned in the input dtype. The zoology MQAR models use it for the pre-norm of
// each block and the final norm.
#pragma once

#include "layers/norm.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::layers {

class LayerNorm : public Norm {
 public:
  explicit LayerNorm(int64_t hidden_size, double eps = 1e-5);

  // x [..., hidden_size] -> same shape and dtype.
  at::Tensor forward(const at::Tensor& x) const override;

  int64_t hidden_size() const { return hidden_size_; }
  double eps() const { return eps_; }

  // weight (Norm's): [hidden_size], ones
  at::Tensor bias;  // [hidden_size], zeros

 private:
  int64_t hidden_size_;
  double eps_;
};

}  // namespace lintime::layers
