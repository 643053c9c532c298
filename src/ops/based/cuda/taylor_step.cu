// Fused Taylor linear attention decoding step (see taylor_cuda.h).
#include "ops/based/cuda/taylor_cuda.h"
#include "ops/gsa/cuda/warp_mma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace lintime::cuda {
namespace {

constexpr int kStepThreadsTaylor = 256;
constexpr int kColumnsPerPass = 64;                                  // value columns per pass
constexpr int kRowGroups = kStepThreadsTaylor / kColumnsPerPass;     // 4
constexpr int kRowsPerGroup = (kTaylorFeatures + kRowGroups - 1) / kRowGroups;  // 69

// φ(x)_f in φ's order: 1, x_i / 2, x_i x_j / (4 √2).
__device__ __forceinline__ float feature_of(const float* x, int f) {
  if (f == 0) return 1.f;
  if (f <= kTaylorFeatureDim) return 0.5f * x[f - 1];
  const int pair = f - 1 - kTaylorFeatureDim;
  return x[pair / kTaylorFeatureDim] * x[pair % kTaylorFeatureDim] * 0.17677669529663687f;
}

template <class E>
__global__ void __launch_bounds__(kStepThreadsTaylor) taylor_step_kernel(TaylorStepParams p) {
  const int pair = blockIdx.x;  // b * H + h
  const int V = p.value_dim;
  __shared__ float q[kTaylorFeatureDim], k[kTaylorFeatureDim];
  __shared__ float query_features[kTaylorFeatures], key_features[kTaylorFeatures];
  __shared__ float partial[kRowGroups][kColumnsPerPass];
  __shared__ float denominator_parts[kStepThreadsTaylor / 32];
  if (threadIdx.x < kTaylorFeatureDim) {
    q[threadIdx.x] = to_float(static_cast<const E*>(p.q)[pair * kTaylorFeatureDim + threadIdx.x]);
    k[threadIdx.x] = to_float(static_cast<const E*>(p.k)[pair * kTaylorFeatureDim + threadIdx.x]);
  }
  __syncthreads();
  // φ(q), φ(k); z += φ(k) and the denominator φ(q)·z from the updated z.
  float denominator = 0.f;
  for (int f = threadIdx.x; f < kTaylorFeatures; f += kStepThreadsTaylor) {
    const float fq = feature_of(q, f), fk = feature_of(k, f);
    query_features[f] = fq;
    key_features[f] = fk;
    float* z = p.normalizer + int64_t{pair} * kTaylorFeatures + f;
    const float updated = *z + fk;
    *z = updated;
    denominator += fq * updated;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) denominator += __shfl_xor_sync(0xffffffffu, denominator, offset);
  if (threadIdx.x % 32 == 0) denominator_parts[threadIdx.x / 32] = denominator;
  __syncthreads();
  denominator = 0.f;
#pragma unroll
  for (int w = 0; w < kStepThreadsTaylor / 32; ++w) denominator += denominator_parts[w];
  const float scale = p.normalize ? 1.f / (denominator + p.eps) : 1.f;

  // S rows r = group + 4 i, column c: S += φ(k)_r v_c, numerator_c += φ(q)_r S_rc.
  const int column = threadIdx.x % kColumnsPerPass, group = threadIdx.x / kColumnsPerPass;
  const E* v = static_cast<const E*>(p.v) + int64_t{pair} * V;
  float* state = p.state + int64_t{pair} * kTaylorFeatures * V;
  for (int c0 = 0; c0 < V; c0 += kColumnsPerPass) {
    const int c = c0 + column;
    float numerator = 0.f;
    if (c < V) {
      const float vc = to_float(v[c]);
#pragma unroll 8
      for (int i = 0; i < kRowsPerGroup; ++i) {
        const int r = group + kRowGroups * i;
        if (r >= kTaylorFeatures) break;
        float* s = state + int64_t{r} * V + c;
        const float updated = *s + key_features[r] * vc;
        *s = updated;
        numerator += query_features[r] * updated;
      }
    }
    partial[group][column] = numerator;
    __syncthreads();
    if (group == 0 && c < V) {
      float sum = 0.f;
#pragma unroll
      for (int g = 0; g < kRowGroups; ++g) sum += partial[g][column];
      static_cast<E*>(p.o)[int64_t{pair} * V + c] = from_float<E>(sum * scale);
    }
    __syncthreads();
  }
}

template <class E>
cudaError_t launch_step(const TaylorStepParams& p, cudaStream_t stream) {
  const int pairs = p.batch * p.heads;
  if (pairs == 0 || p.value_dim == 0) return cudaSuccess;
  taylor_step_kernel<E><<<pairs, kStepThreadsTaylor, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t taylor_step(const TaylorStepParams& params, cudaStream_t stream) {
  switch (params.element) {
    case TaylorElement::bfloat16: return launch_step<__nv_bfloat16>(params, stream);
    case TaylorElement::float16: return launch_step<__half>(params, stream);
    case TaylorElement::float32: return launch_step<float>(params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace lintime::cuda
