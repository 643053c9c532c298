// The short-convolution mixer of the BASED language model (HazyResearch's BaseConv, the LM
// version of based.md §3), with d_inner = 2 d:
//   u1, u2 = split(in_proj x)                  in_proj: d → 4 d with bias; u1 the first half
//   c      = causal depthwise conv(u1)         kernel 3 over 2 d channels, no bias
//   y      = out_proj(silu(c) ⊙ u2)            out_proj: 2 d → d with bias
// Checkpoint names "in_proj", "conv.conv.weight" [2d, 1, k], "out_proj". Init: projections
// N(0, std) (out_proj N(0, out_std)), zero biases, the conv torch's default U(±1/√k).
// Decoding keeps the conv's last k − 1 inputs (ShortConvolution's state).
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/short_convolution.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::layers {

class GatedConv : public Module {
 public:
  GatedConv(int64_t hidden_size, int64_t kernel_size, double std, double out_std, at::Generator& generator,
            bool bias = true);

  // x [B, T, d] -> [B, T, d]. conv_state [B, k − 1, 2 d]: the history, updated in place.
  at::Tensor forward(const at::Tensor& x, at::Tensor* conv_state = nullptr) const;

  int64_t kernel_size() const { return conv_holder.conv.kernel_size(); }
  // Its decode state: the conv's last k − 1 inputs of 2 d channels, fp32.
  int64_t state_bytes_per_sequence() const { return (conv_holder.conv.kernel_size() - 1) * 2 * hidden_size_ * 4; }

 private:
  // "conv.conv.weight": HazyResearch's ShortConvolution wraps an nn.Conv1d named conv.
  struct ConvHolder : Module {
    ConvHolder(int64_t channels, int64_t kernel_size, at::Generator& generator);
    ShortConvolution conv;
  };
  int64_t hidden_size_;

 public:
  Linear in_proj;
  ConvHolder conv_holder;
  Linear out_proj;
};

}  // namespace lintime::layers
