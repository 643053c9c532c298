// RMSNorm as fla computes it: y = x · rsqrt(mean(x²) + eps) · w over the last dim, in fp32
// (fp64 for fp64 inputs), returned in the input dtype. The weight is optional
// (elementwise_affine = false gives a plain normalisation, as GSA-2.7B's g_norm).
#pragma once

#include "layers/norm.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace lintime::layers {

class RMSNorm : public Norm {
 public:
  explicit RMSNorm(int64_t hidden_size, double eps = 1e-6, bool elementwise_affine = true);

  // x [..., hidden_size] -> same shape and dtype.
  at::Tensor forward(const at::Tensor& x) const override;
  // (x + residual, forward(x + residual)); in inference on a GPU one fused kernel
  // (ops::add_rms_norm) instead of an add and a norm.
  std::pair<at::Tensor, at::Tensor> add_forward(const at::Tensor& x, const at::Tensor& residual) const override;
  // forward(silu(x)); in inference on a GPU one fused kernel (ops::silu_rms_norm).
  at::Tensor silu_forward(const at::Tensor& x) const;

  int64_t hidden_size() const { return hidden_size_; }
  double eps() const { return eps_; }

  // weight (Norm's): [hidden_size] (ones), undefined without elementwise_affine

 private:
  int64_t hidden_size_;
  double eps_;
};

}  // namespace lintime::layers
