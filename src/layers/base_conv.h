// BaseConv, the short-convolution mixer of zoology's MQAR models (based.md §3, MQAR version):
//   y = conv(u) ⊙ (u Wᵀ + b) + u
// with a causal depthwise convolution of kernel_size taps over d channels (with bias, no
// activation) and a d→d projection with bias; the residual is inside the mixer. Used as the
// first layer of the 2-layer [BaseConv, mixer] models of the zoology and BASED protocols.
// Init: projection N(0, std) with zero bias (zoology re-initialises every Linear this way); the
// conv keeps torch's Conv1d default, weight and bias U(−1/√k, 1/√k) (fan_in = k for depthwise).
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/short_convolution.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::layers {

class BaseConv : public Module {
 public:
  BaseConv(int64_t hidden_size, int64_t kernel_size, double std, at::Generator& generator);

  // u [B, T, d] -> [B, T, d] in u's dtype. conv_state [B, k−1, d] (inputs before u, oldest
  // first) is read as the history and overwritten with the last k − 1 inputs; without it the
  // history is zeros.
  at::Tensor forward(const at::Tensor& u, at::Tensor* conv_state = nullptr) const;

  // State bytes per sequence as zoology and the BASED paper count them (based.md §6): d·k fp32
  // values (the decode history itself is d·(k − 1)).
  int64_t state_bytes_per_sequence() const { return state_bytes_per_sequence(hidden_size_, kernel_size_); }
  static int64_t state_bytes_per_sequence(int64_t hidden_size, int64_t kernel_size);
  // d² + d (projection) + d·k + d (conv).
  static int64_t parameter_count_for(int64_t hidden_size, int64_t kernel_size);

  int64_t hidden_size() const { return hidden_size_; }
  int64_t kernel_size() const { return kernel_size_; }

 private:
  int64_t hidden_size_;
  int64_t kernel_size_;

 public:
  Linear projection;      // d -> d, with bias
  ShortConvolution conv;  // weight [d, 1, k], bias [d]
};

}  // namespace lintime::layers
