// Fused short causal depthwise convolution (see short_convolution_cuda.h): one thread per output
// element, channels on consecutive threads (coalesced); the W inputs each output reads come
// through the caches. Memory-bound: one read of x and one write of y where the ATen form runs a
// kernel per tap.
#include "ops/conv/cuda/short_convolution_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

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

template <class E>
__device__ __forceinline__ E from_float_of(float x) {
  if constexpr (std::is_same<E, __half>::value) return __float2half_rn(x);
  else if constexpr (std::is_same<E, __nv_bfloat16>::value) return __float2bfloat16_rn(x);
  else return x;
}

template <class E>
__device__ __forceinline__ float to_float_of(E x) {
  if constexpr (sizeof(E) == 2 && std::is_same<E, __half>::value) return __half2float(x);
  else if constexpr (sizeof(E) == 2) return __bfloat162float(x);
  else return x;
}

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

// Eight consecutive elements from element i (16-byte aligned) as floats.
template <class E>
__device__ __forceinline__ void load8(const void* p, int64_t i, float (&out)[8]) {
  if constexpr (sizeof(E) == 2) {
    const uint4 packed = *reinterpret_cast<const uint4*>(static_cast<const E*>(p) + i);
    const E* values = reinterpret_cast<const E*>(&packed);
#pragma unroll
    for (int c = 0; c < 8; ++c) out[c] = to_float_of(values[c]);
  } else {
    const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    const float4 b = *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i + 4);
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
  }
}

// Eight floats stored from element i (16-byte aligned), rounded to E.
template <class E>
__device__ __forceinline__ void store8(void* p, int64_t i, const float (&in)[8]) {
  if constexpr (sizeof(E) == 2) {
    alignas(16) E packed[8];
#pragma unroll
    for (int c = 0; c < 8; ++c) packed[c] = from_float_of<E>(in[c]);
    *reinterpret_cast<uint4*>(static_cast<E*>(p) + i) = *reinterpret_cast<const uint4*>(packed);
  } else {
    *reinterpret_cast<float4*>(static_cast<float*>(p) + i) = make_float4(in[0], in[1], in[2], in[3]);
    *reinterpret_cast<float4*>(static_cast<float*>(p) + i + 4) = make_float4(in[4], in[5], in[6], in[7]);
  }
}

// Taps u_{t−(W−1)+j}, j < W, of channels d0..d0+7 at row (b, t) (before the sequence: the initial
// state or zeros).
template <class E, int kW>
__device__ __forceinline__ void load_taps8(const ShortConvolutionParams& p, int64_t b, int64_t t, int64_t d0,
                                           float (&taps)[kW][8]) {
#pragma unroll
  for (int j = 0; j < kW; ++j) {
    const int64_t at = t - (kW - 1) + j;
    if (at >= 0) {
      load8<E>(p.x, (b * p.seqlen + at) * p.channels + d0, taps[j]);
    } else if (p.initial_state != nullptr) {
      load8<E>(p.initial_state, (b * (kW - 1) + (kW - 1 + at)) * p.channels + d0, taps[j]);
    } else {
#pragma unroll
      for (int c = 0; c < 8; ++c) taps[j][c] = 0.f;
    }
  }
}

template <class E, int kW>
__device__ __forceinline__ void load_weights8(const ShortConvolutionParams& p, int64_t d0, float (&w)[8][kW],
                                              float (&bias)[8]) {
#pragma unroll
  for (int c = 0; c < 8; ++c) {
#pragma unroll
    for (int j = 0; j < kW; ++j) w[c][j] = Element<E>::load(p.weight, (d0 + c) * kW + j);
    bias[c] = p.bias != nullptr ? Element<E>::load(p.bias, d0 + c) : 0.f;
  }
}

// dx with eight channels per thread: dx_t = Σ_j w_j da_{t+(W−1)−j}, da = dy · act'(a) recomputed.
template <class E, int kW>
__global__ void input_grad_vector_kernel(ShortConvolutionParams p) {
  const int64_t groups = p.channels / 8, total = p.batch * p.seqlen * groups;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kThreads) {
    const int64_t d0 = (i % groups) * 8, row = i / groups, t = row % p.seqlen, b = row / p.seqlen;
    float w[8][kW], bias[8], dx[8] = {};
    load_weights8<E, kW>(p, d0, w, bias);
#pragma unroll
    for (int j = 0; j < kW; ++j) {
      const int64_t out = t + (kW - 1) - j;
      if (out >= p.seqlen) continue;
      float da[8];
      load8<E>(p.dy, (b * p.seqlen + out) * p.channels + d0, da);
      if (p.silu) {
        float taps[kW][8];
        load_taps8<E, kW>(p, b, out, d0, taps);
#pragma unroll
        for (int c = 0; c < 8; ++c) {
          float a = bias[c];
#pragma unroll
          for (int k = 0; k < kW; ++k) a += w[c][k] * taps[k][c];
          const float s = sigmoid(a);
          da[c] *= s * (1.f + a * (1.f - s));
        }
      }
#pragma unroll
      for (int c = 0; c < 8; ++c) dx[c] += w[c][j] * da[c];
    }
    store8<E>(p.dx, row * p.channels + d0, dx);
  }
}

// The weight and bias gradients with eight channels per thread (16-byte loads; D % 8 == 0,
// aligned tensors, no initial state, W known at compile time): a warp covers 256 channels of a
// row, the CTA's 8 warps 8 rows at a time.
template <class E, int kW>
__global__ void weight_grad_vector_kernel(ShortConvolutionParams p, int64_t rows_per_block) {
  const int64_t d0 = (blockIdx.x * int64_t{32} + threadIdx.x % 32) * 8;
  if (d0 >= p.channels) return;
  const int64_t rows = p.batch * p.seqlen;
  const int64_t first = blockIdx.y * rows_per_block, last = min(rows, first + rows_per_block);
  float w[8][kW], bias[8], dw[8][kW] = {}, db[8] = {};
  load_weights8<E, kW>(p, d0, w, bias);
  for (int64_t row = first + threadIdx.x / 32; row < last; row += kThreads / 32) {
    const int64_t t = row % p.seqlen;
    float da[8], taps[kW][8];
    load8<E>(p.dy, row * p.channels + d0, da);
#pragma unroll
    for (int j = 0; j < kW; ++j) {
      const int64_t at = t - (kW - 1) + j;  // inside this sequence: rows of one sequence are contiguous
      if (at >= 0) {
        load8<E>(p.x, (row - (kW - 1) + j) * p.channels + d0, taps[j]);
      } else {
#pragma unroll
        for (int c = 0; c < 8; ++c) taps[j][c] = 0.f;
      }
    }
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      if (p.silu) {
        float a = bias[c];
#pragma unroll
        for (int j = 0; j < kW; ++j) a += w[c][j] * taps[j][c];
        const float s = sigmoid(a);
        da[c] *= s * (1.f + a * (1.f - s));
      }
      db[c] += da[c];
#pragma unroll
      for (int j = 0; j < kW; ++j) dw[c][j] += da[c] * taps[j][c];
    }
  }
#pragma unroll
  for (int c = 0; c < 8; ++c) {
#pragma unroll
    for (int j = 0; j < kW; ++j) atomicAdd(p.dweight + (d0 + c) * kW + j, dw[c][j]);
    if (p.dbias != nullptr) atomicAdd(p.dbias + d0 + c, db[c]);
  }
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

// Whether the eight-channel kernels take these tensors: W at compile time, D % 8 == 0 and every
// row 16-byte aligned.
template <int kW>
bool vector_path(const ShortConvolutionParams& p, std::initializer_list<const void*> pointers) {
  if (kW == 0 || p.channels % 8 != 0) return false;
  uintptr_t bits = 0;
  for (const void* pointer : pointers) bits |= reinterpret_cast<uintptr_t>(pointer);
  return bits % 16 == 0;
}

// The forward stays one channel per thread: an eight-channel form (as dx's) measured
// 0.98 → 0.45 ms at B 16, T 8192, D 1024 but 7.65 → 10.50 ms at B 128 (145 registers, one CTA
// per SM); see dev/based/README.md.
template <class E, int kW>
void forward(const ShortConvolutionParams& p, cudaStream_t stream) {
  forward_kernel<E, kW><<<blocks_for(p.batch * p.seqlen * p.channels), kThreads, 0, stream>>>(p);
  if (p.final_state != nullptr && p.width > 1) {
    final_state_kernel<E><<<blocks_for(p.batch * (p.width - 1) * p.channels), kThreads, 0, stream>>>(p);
  }
}

template <class E, int kW>
void backward(const ShortConvolutionParams& p, cudaStream_t stream) {
  const bool vector = vector_path<kW>(p, {p.x, p.dy, p.dx}) && p.initial_state == nullptr;
  if constexpr (kW > 0) {
    if (vector) {
      input_grad_vector_kernel<E, kW><<<blocks_for(p.batch * p.seqlen * p.channels / 8), kThreads, 0, stream>>>(p);
    } else {
      input_grad_kernel<E, kW><<<blocks_for(p.batch * p.seqlen * p.channels), kThreads, 0, stream>>>(p);
    }
  } else {
    input_grad_kernel<E, kW><<<blocks_for(p.batch * p.seqlen * p.channels), kThreads, 0, stream>>>(p);
  }
  // Rows split so that the grid has a few thousand blocks of 8 row-strided warps.
  const int64_t rows = p.batch * p.seqlen, channel_blocks = (p.channels + (vector ? 255 : 31)) / (vector ? 256 : 32);
  const int64_t row_blocks = std::max<int64_t>(1, std::min<int64_t>((rows + 255) / 256, 4096 / channel_blocks + 1));
  const int64_t rows_per_block = (rows + row_blocks - 1) / row_blocks;
  const dim3 grid(static_cast<unsigned>(channel_blocks), static_cast<unsigned>(row_blocks));
  if constexpr (kW > 0) {
    if (vector) {
      weight_grad_vector_kernel<E, kW><<<grid, kThreads, 0, stream>>>(p, rows_per_block);
      return;
    }
  }
  weight_grad_kernel<E, kW><<<grid, kThreads, 0, stream>>>(p, rows_per_block);
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
