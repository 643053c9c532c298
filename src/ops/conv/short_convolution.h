// Short causal depthwise convolution, the token mixer inside BASED's BaseConv layers (based.md
// §3) and fla's short convolutions (GSA's use_short_conv):
//   y_t = act(b + Σ_{j<W} w[:, j] ⊙ x_{t−(W−1)+j})        act: SiLU or none
// per channel d, with the inputs before the first token taken from the initial state (the last
// W − 1 inputs of the previous call, oldest first; zeros when absent).
//
// Shapes: x [B, T, D]; weight [D, 1, W] (torch Conv1d's depthwise layout); bias [D] or absent;
// state [N, W − 1, D]; cu_seqlens [N + 1] packs N sequences along T (B == 1; each starts from
// its own initial state, zeros when absent), otherwise N = B. Computation in fp32 (fp64 for
// fp64 inputs); y in x's dtype; the final state (the last W − 1 inputs of each sequence, in x's
// dtype) undefined unless requested. Differentiable ATen ops: autograd gives the gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace lintime::ops {

using ShortConvolutionOutputs = std::tuple<at::Tensor, at::Tensor>;  // y, final state

void short_convolution_check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& initial_state,
                                    const at::Tensor& cu_seqlens);

// W shifted multiply-adds over the history-padded input (the form the layers use).
ShortConvolutionOutputs short_convolution_fwd(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                              bool silu, const at::Tensor& initial_state, bool output_final_state,
                                              const at::Tensor& cu_seqlens);

// torch's depthwise conv1d, sequence by sequence: the reference.
ShortConvolutionOutputs short_convolution_reference_fwd(const at::Tensor& x, const at::Tensor& weight,
                                                        const at::Tensor& bias, bool silu,
                                                        const at::Tensor& initial_state, bool output_final_state,
                                                        const at::Tensor& cu_seqlens);

// One token per sequence: x [B, D] -> y [B, D]; the state [B, W − 1, D] shifts by one in place.
at::Tensor short_convolution_step_inplace(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                          bool silu, at::Tensor& state);

}  // namespace lintime::ops
