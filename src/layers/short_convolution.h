// fla's ShortConvolution: a causal depthwise conv1d over time with kernel_size taps, weight
// [D, 1, W] (torch Conv1d layout, fla's checkpoint name "<x>_conv1d.weight"), optional bias,
// optional SiLU. For decoding it keeps the last W − 1 inputs of each sequence as its state.
#pragma once

#include "layers/module.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>

namespace lintime::layers {

class ShortConvolution : public Module {
 public:
  // activation: "silu" (fla's default in GSA) or "" (none). Weight N(0, std).
  ShortConvolution(int64_t hidden_size, int64_t kernel_size, double std, at::Generator& generator,
                   bool bias = false, const std::string& activation = "silu");

  // x [B, T, D] -> [B, T, D] in x's dtype, y_t = act(b + Σ_j w[:, j] ⊙ x_{t−(W−1)+j}).
  // conv_state [B, W−1, D] (the inputs before x, oldest first): read as the history and
  // overwritten in place with the last W − 1 inputs. Without it the history is zeros.
  // cu_seqlens [N+1] (B == 1): each packed sequence starts from a zero history.
  at::Tensor forward(const at::Tensor& x, at::Tensor* conv_state = nullptr,
                     const std::optional<at::Tensor>& cu_seqlens = std::nullopt) const;

  int64_t hidden_size() const { return hidden_size_; }
  int64_t kernel_size() const { return kernel_size_; }

  at::Tensor weight;  // [D, 1, W]
  at::Tensor bias;    // [D], undefined without bias

 private:
  int64_t hidden_size_;
  int64_t kernel_size_;
  bool silu_;
};

}  // namespace lintime::layers
