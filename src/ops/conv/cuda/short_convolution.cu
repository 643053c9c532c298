// Fused short causal depthwise convolution (see short_convolution_cuda.h): one thread per output
// element, channels on consecutive threads (coalesced); the W inputs each output reads come
// through the caches. Memory-bound: one read of x and one write of y where the ATen form runs a
// kernel per tap.
#include "ops/conv/cuda/short_convolution_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

namespace lintime::cuda {
namespace {

constexpr int kThreads = 256;

template <class E> struct Element;
template <> struct Element<__nv_bfloat16> {
  __device__ static float load(const void* p, int64_t i) { return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]); }
  __device__ static void store(void* p, int64_t i, float x) { static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x); }
};
template <> struct Element<__half> {
  __device__ static float load(const void* p, int64_t i) { return __half2float(static_cast<const __half*>(p)[i]); }
  __device__ static void store(void* p, int64_t i, float x) { static_cast<__half*>(p)[i] = __float2half_rn(x); }
};
template <> struct Element<float> {
  __device__ static float load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  __device__ static void store(void* p, int64_t i, float x) { static_cast<float*>(p)[i] = x; }
};

// Input u of sequence b at position t ∈ [−(W − 1), T) (negative: the initial state, or zero).
// Kernels take the width W at compile time (kW, so that the taps live in registers) or, with
// kW = 0, from the params.
template <class E>
__device__ __forceinline__ float input_at(const ShortConvolutionParams& p, int64_t b, int64_t t, int64_t d) {
  if (t >= 0) return Element<E>::load(p.x, (b * p.seqlen + t) * p.channels + d);
  if (p.initial_state == nullptr) return 0.f;
  return Element<E>::load(p.initial_state, (b * (p.width - 1) + (p.width - 1 + t)) * p.channels + d);
}

// The pre-activation a_t = b + Σ_j w_j u_{t−(W−1)+j} of channel d.
template <class E, int kW>
__device__ __forceinline__ float pre_activation(const ShortConvolutionParams& p, const float (&w)[kShortConvolutionMaxWidth],
                                                float bias, int64_t b, int64_t t, int64_t d) {
  const int W = kW > 0 ? kW : p.width;
  float a = bias;
#pragma unroll
  for (int j = 0; j < (kW > 0 ? kW : kShortConvolutionMaxWidth); ++j) {
    if (j < W) a += w[j] * input_at<E>(p, b, t - (W - 1) + j, d);
  }
  return a;
}

__device__ __forceinline__ float sigmoid(float a) { return 1.f / (1.f + expf(-a)); }

template <class E, int kW>
__device__ __forceinline__ void load_weights(const ShortConvolutionParams& p, int64_t d, float (&w)[kShortConvolutionMaxWidth],
                                             float& bias) {
  const int W = kW > 0 ? kW : p.width;
#pragma unroll
  for (int j = 0; j < kShortConvolutionMaxWidth; ++j) w[j] = j < W ? Element<E>::load(p.weight, d * W + j) : 0.f;
  bias = p.bias != nullptr ? Element<E>::load(p.bias, d) : 0.f;
}

template <class E, int kW>
__global__ void forward_kernel(ShortConvolutionParams p) {
  const int64_t total = p.batch * p.seqlen * p.channels;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kThreads) {
    const int64_t d = i % p.channels, t = (i / p.channels) % p.seqlen, b = i / (p.channels * p.seqlen);
    float w[kShortConvolutionMaxWidth], bias;
    load_weights<E, kW>(p, d, w, bias);
    const float a = pre_activation<E, kW>(p, w, bias, b, t, d);
    Element<E>::store(p.y, i, p.silu ? a * sigmoid(a) : a);
  }
}

// The last W − 1 inputs of each sequence (from the initial state when T < W − 1).
template <class E>
__global__ void final_state_kernel(ShortConvolutionParams p) {
  const int64_t history = p.width - 1, total = p.batch * history * p.channels;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kThreads) {
    const int64_t d = i % p.channels, slot = (i / p.channels) % history, b = i / (p.channels * history);
    Element<E>::store(p.final_state, i, input_at<E>(p, b, p.seqlen - history + slot, d));
  }
}

// dx_t = Σ_j w_j da_{t+(W−1)−j} (positions inside the sequence) with da = dy · act'(a), a recomputed.
template <class E, int kW>
__global__ void input_grad_kernel(ShortConvolutionParams p) {
  const int64_t total = p.batch * p.seqlen * p.channels;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kThreads) {
    const int64_t d = i % p.channels, t = (i / p.channels) % p.seqlen, b = i / (p.channels * p.seqlen);
    float w[kShortConvolutionMaxWidth], bias;
    load_weights<E, kW>(p, d, w, bias);
    const int W = kW > 0 ? kW : p.width;
    float dx = 0.f;
#pragma unroll
    for (int j = 0; j < (kW > 0 ? kW : kShortConvolutionMaxWidth); ++j) {
      if (j >= W) continue;
      const int64_t out = t + (W - 1) - j;
      if (out >= p.seqlen) continue;
      float da = Element<E>::load(p.dy, (b * p.seqlen + out) * p.channels + d);
      if (p.silu) {
        const float a = pre_activation<E, kW>(p, w, bias, b, out, d), s = sigmoid(a);
        da *= s * (1.f + a * (1.f - s));
      }
      dx += w[j] * da;
    }
    Element<E>::store(p.dx, i, dx);
  }
}

// dw_j = Σ_{b,t} da_t u_{t−(W−1)+j}, db = Σ da_t: each thread sums a strided set of (b, t) rows of
// one channel, then one fp32 atomic per tap.
template <class E, int kW>
__global__ void weight_grad_kernel(ShortConvolutionParams p, int64_t rows_per_block) {
  const int64_t d = blockIdx.x * int64_t{32} + threadIdx.x % 32;
  if (d >= p.channels) return;
  const int64_t rows = p.batch * p.seqlen;
  const int64_t first = blockIdx.y * rows_per_block, last = min(rows, first + rows_per_block);
  const int W = kW > 0 ? kW : p.width;
  float w[kShortConvolutionMaxWidth], bias;
  load_weights<E, kW>(p, d, w, bias);
  float dw[kShortConvolutionMaxWidth] = {}, db = 0.f;
  for (int64_t row = first + threadIdx.x / 32; row < last; row += kThreads / 32) {
    const int64_t b = row / p.seqlen, t = row % p.seqlen;
    float da = Element<E>::load(p.dy, row * p.channels + d);
    if (p.silu) {
      const float a = pre_activation<E, kW>(p, w, bias, b, t, d), s = sigmoid(a);
      da *= s * (1.f + a * (1.f - s));
    }
    db += da;
#pragma unroll
    for (int j = 0; j < (kW > 0 ? kW : kShortConvolutionMaxWidth); ++j) {
      if (j < W) dw[j] += da * input_at<E>(p, b, t - (W - 1) + j, d);
    }
  }
  for (int j = 0; j < W; ++j) atomicAdd(p.dweight + d * W + j, dw[j]);
  if (p.dbias != nullptr) atomicAdd(p.dbias + d, db);
}

template <class E, int kW>
__global__ void step_kernel(ShortConvolutionParams p) {
  const int W = kW > 0 ? kW : p.width;
  const int64_t total = p.batch * p.channels, history = W - 1;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kThreads) {
    const int64_t d = i % p.channels, b = i / p.channels;
    float w[kShortConvolutionMaxWidth], bias;
    load_weights<E, kW>(p, d, w, bias);
    const float x = Element<E>::load(p.x, i);
    float a = bias;
#pragma unroll
    for (int j = 0; j < kShortConvolutionMaxWidth; ++j) {
      if (j == W - 1) a += w[j] * x;
    }
    float previous = x;  // shifts the state down by one: slot j takes slot j + 1, the last takes x
#pragma unroll
    for (int slot = kShortConvolutionMaxWidth - 2; slot >= 0; --slot) {
      if (slot >= history) continue;
      const int64_t at = (b * history + slot) * p.channels + d;
      const float u = Element<E>::load(p.initial_state, at);
      a += w[slot] * u;
      Element<E>::store(p.final_state, at, previous);
      previous = u;
    }
    Element<E>::store(p.y, i, p.silu ? a * sigmoid(a) : a);
  }
}

int blocks_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 * 4 ? blocks : 65535 * 4);
}

template <class E, int kW>
void forward(const ShortConvolutionParams& p, cudaStream_t stream) {
  forward_kernel<E, kW><<<blocks_for(p.batch * p.seqlen * p.channels), kThreads, 0, stream>>>(p);
  if (p.final_state != nullptr && p.width > 1) {
    final_state_kernel<E><<<blocks_for(p.batch * (p.width - 1) * p.channels), kThreads, 0, stream>>>(p);
  }
}

template <class E, int kW>
void backward(const ShortConvolutionParams& p, cudaStream_t stream) {
  input_grad_kernel<E, kW><<<blocks_for(p.batch * p.seqlen * p.channels), kThreads, 0, stream>>>(p);
  // Rows split so that the grid has a few thousand blocks of 8 row-strided warps.
  const int64_t rows = p.batch * p.seqlen, channel_blocks = (p.channels + 31) / 32;
  const int64_t row_blocks = std::max<int64_t>(1, std::min<int64_t>((rows + 255) / 256, 4096 / channel_blocks + 1));
  const int64_t rows_per_block = (rows + row_blocks - 1) / row_blocks;
  weight_grad_kernel<E, kW><<<dim3(static_cast<unsigned>(channel_blocks), static_cast<unsigned>(row_blocks)), kThreads, 0,
                          stream>>>(p, rows_per_block);
}

template <class E, int kW>
void step(const ShortConvolutionParams& p, cudaStream_t stream) {
  step_kernel<E, kW><<<blocks_for(p.batch * p.channels), kThreads, 0, stream>>>(p);
}

// Calls Launch<E, kW>::run for the element type, with W = 2, 3, 4 at compile time (else kW = 0).
template <template <class, int> class Launch>
cudaError_t dispatch(const ShortConvolutionParams& p, cudaStream_t stream) {
  if (p.batch * p.channels == 0 || p.width < 1 || p.width > kShortConvolutionMaxWidth) return cudaSuccess;
  auto by_width = [&](auto element) {
    using E = decltype(element);
    switch (p.width) {
      case 2: Launch<E, 2>::run(p, stream); break;
      case 3: Launch<E, 3>::run(p, stream); break;
      case 4: Launch<E, 4>::run(p, stream); break;
      default: Launch<E, 0>::run(p, stream); break;
    }
  };
  switch (p.element) {
    case ConvElement::bfloat16: by_width(__nv_bfloat16{}); break;
    case ConvElement::float16: by_width(__half{}); break;
    default: by_width(float{}); break;
  }
  return cudaGetLastError();
}

template <class E, int kW> struct Forward { static void run(const ShortConvolutionParams& p, cudaStream_t s) { forward<E, kW>(p, s); } };
template <class E, int kW> struct Backward { static void run(const ShortConvolutionParams& p, cudaStream_t s) { backward<E, kW>(p, s); } };
template <class E, int kW> struct Step { static void run(const ShortConvolutionParams& p, cudaStream_t s) { step<E, kW>(p, s); } };

}  // namespace

cudaError_t short_convolution_forward(const ShortConvolutionParams& params, cudaStream_t stream) {
  if (params.seqlen == 0) return cudaSuccess;
  return dispatch<Forward>(params, stream);
}

cudaError_t short_convolution_backward(const ShortConvolutionParams& params, cudaStream_t stream) {
  if (params.seqlen == 0) return cudaSuccess;
  return dispatch<Backward>(params, stream);
}

cudaError_t short_convolution_step(const ShortConvolutionParams& params, cudaStream_t stream) {
  return dispatch<Step>(params, stream);
}

}  // namespace lintime::cuda
