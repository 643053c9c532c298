// The torch-free interface of lintime's fused short causal depthwise convolution
// (ops/conv/short_convolution.h): y_t = act(b + Σ_{j<W} w[:, j] ⊙ x_{t−(W−1)+j}) per channel, act
// SiLU or none, fp32 arithmetic, y rounded once. Forward (initial and final states), backward
// (dx, dw, db; no initial state) and the one-token step in place; contiguous [B, T, D] tensors,
// no varlen (the binding, ops/register/short_convolution_registration.cpp, routes the rest to
// the ATen forms). Every tensor has x's element type.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lintime::cuda {

enum class ConvElement { bfloat16, float16, float32 };
constexpr int kShortConvolutionMaxWidth = 8;

struct ShortConvolutionParams {
  ConvElement element = ConvElement::bfloat16;
  int64_t batch = 0, seqlen = 0, channels = 0;
  int width = 0;  // W ≤ kShortConvolutionMaxWidth
  bool silu = false;
  const void* x = nullptr;              // [B, T, D]
  const void* weight = nullptr;         // [D, W]
  const void* bias = nullptr;           // [D] or null
  const void* initial_state = nullptr;  // [B, W − 1, D] or null (zeros)
  void* y = nullptr;                    // [B, T, D]
  void* final_state = nullptr;          // [B, W − 1, D] or null
  // Backward (no initial state): dy in; dx out; dw, db accumulated in fp32 (zeroed by the caller).
  const void* dy = nullptr;
  void* dx = nullptr;
  float* dweight = nullptr;  // [D, W]
  float* dbias = nullptr;    // [D] or null
};

cudaError_t short_convolution_forward(const ShortConvolutionParams& params, cudaStream_t stream);
cudaError_t short_convolution_backward(const ShortConvolutionParams& params, cudaStream_t stream);
// One token: x [B, D] (seqlen 1), the state [B, W − 1, D] (initial_state and final_state the
// same pointer) shifted by one in place.
cudaError_t short_convolution_step(const ShortConvolutionParams& params, cudaStream_t stream);

}  // namespace lintime::cuda
