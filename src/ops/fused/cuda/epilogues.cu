// Fused inference epilogues (see epilogues_cuda.h): one kernel where a decode step ran several
// elementwise ATen kernels.
#include "ops/fused/cuda/epilogues_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <initializer_list>

namespace lintime::cuda {
namespace {

template <class E> struct Element;
template <> struct Element<__nv_bfloat16> {
  __device__ static float load(const void* p, int64_t i) { return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]); }
  __device__ static void store(void* p, int64_t i, float x) { static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x); }
  __device__ static float round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
};
template <> struct Element<__half> {
  __device__ static float load(const void* p, int64_t i) { return __half2float(static_cast<const __half*>(p)[i]); }
  __device__ static void store(void* p, int64_t i, float x) { static_cast<__half*>(p)[i] = __float2half_rn(x); }
  __device__ static float round(float x) { return __half2float(__float2half_rn(x)); }
};
template <> struct Element<float> {
  __device__ static float load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  __device__ static void store(void* p, int64_t i, float x) { static_cast<float*>(p)[i] = x; }
  __device__ static float round(float x) { return x; }
};

__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

constexpr int kThreads = 256;

// V consecutive elements of one row: one 16-byte access when the launch found every row start
// aligned (V = 16 / sizeof(E)), else V = 1.
template <class E, int V> struct Pack {
  __device__ static void load(const void* p, int64_t i, float (&x)[V]) {
    if constexpr (V == 1) {
      x[0] = Element<E>::load(p, i);
    } else {
      const uint4 bits = *reinterpret_cast<const uint4*>(static_cast<const E*>(p) + i);
      const E* e = reinterpret_cast<const E*>(&bits);
#pragma unroll
      for (int j = 0; j < V; ++j) x[j] = Element<E>::load(e, j);
    }
  }
  __device__ static void store(void* p, int64_t i, const float (&x)[V]) {
    if constexpr (V == 1) {
      Element<E>::store(p, i, x[0]);
    } else {
      uint4 bits;
      E* e = reinterpret_cast<E*>(&bits);
#pragma unroll
      for (int j = 0; j < V; ++j) Element<E>::store(e, j, x[j]);
      *reinterpret_cast<uint4*>(static_cast<E*>(p) + i) = bits;
    }
  }
};

// Rows stride over blockIdx.y, vectors of a row over the x threads: no division per element
// (the flat-index form's 64-bit div and mod held these kernels at half the copy bandwidth).
template <class E, int V>
__global__ void __launch_bounds__(kThreads) swiglu_kernel(SwigluParams p) {
  const int64_t vectors = p.columns / V;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    for (int64_t v = blockIdx.x * int64_t{kThreads} + threadIdx.x; v < vectors; v += int64_t{gridDim.x} * kThreads) {
      float gate[V], up[V], out[V];
      Pack<E, V>::load(p.gate, r * p.gate_row_stride + v * V, gate);
      Pack<E, V>::load(p.up, r * p.up_row_stride + v * V, up);
#pragma unroll
      for (int j = 0; j < V; ++j) out[j] = silu(gate[j]) * up[j];
      Pack<E, V>::store(p.out, r * p.columns + v * V, out);
    }
  }
}

template <class E, int V>
__global__ void __launch_bounds__(kThreads) swiglu_backward_kernel(SwigluBackwardParams p) {
  const int64_t vectors = p.columns / V;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    for (int64_t v = blockIdx.x * int64_t{kThreads} + threadIdx.x; v < vectors; v += int64_t{gridDim.x} * kThreads) {
      float gate[V], up[V], grad_out[V], grad_gate[V], grad_up[V], product[V];
      Pack<E, V>::load(p.gate, r * p.gate_row_stride + v * V, gate);
      Pack<E, V>::load(p.up, r * p.up_row_stride + v * V, up);
      Pack<E, V>::load(p.grad_out, r * p.grad_out_row_stride + v * V, grad_out);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float sigmoid = 1.f / (1.f + expf(-gate[j]));
        const float swish = gate[j] * sigmoid;
        grad_up[j] = grad_out[j] * swish;
        grad_gate[j] = (grad_out[j] * up[j]) * (sigmoid * (1.f + gate[j] * (1.f - sigmoid)));
        product[j] = silu(gate[j]) * up[j];  // the forward's expression: its bits
      }
      const int64_t at = r * p.columns + v * V;
      Pack<E, V>::store(p.grad_up, at, grad_up);
      Pack<E, V>::store(p.grad_gate, at, grad_gate);
      if (p.product != nullptr) Pack<E, V>::store(p.product, at, product);
    }
  }
}

// The rounded y of element c of row r (see RowNormParams).
template <class E>
__device__ __forceinline__ float norm_input(const RowNormParams& p, int64_t r, int64_t c) {
  const float x = Element<E>::load(p.x, r * p.x_row_stride + c);
  if (p.add) return Element<E>::round(x + Element<E>::load(p.residual, r * p.residual_row_stride + c));
  if (p.silu) return Element<E>::round(silu(x));
  return x;
}

// One CTA per row: y and Σ y² (block reduction), then y · rsqrt(mean + eps) · w.
template <class E>
__global__ void __launch_bounds__(kThreads) row_norm_kernel(RowNormParams p) {
  const int64_t r = blockIdx.x;
  float sum_squares = 0.f;
  for (int64_t c = threadIdx.x; c < p.columns; c += kThreads) {
    const float y = norm_input<E>(p, r, c);
    if (p.add) Element<E>::store(p.sum, r * p.columns + c, y);
    sum_squares += y * y;
  }
  __shared__ float warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) sum_squares += __shfl_xor_sync(0xffffffffu, sum_squares, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum_squares;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  const float rstd = rsqrtf(total / static_cast<float>(p.columns) + p.eps);
  for (int64_t c = threadIdx.x; c < p.columns; c += kThreads) {
    const float y = norm_input<E>(p, r, c);
    const float w = p.weight != nullptr ? Element<E>::load(p.weight, c) : 1.f;
    Element<E>::store(p.out, r * p.columns + c, y * rstd * w);
  }
}

template <class E>
__global__ void gsa_activations_kernel(GsaActivationParams p) {
  const int64_t width = p.widths[0] + p.widths[1] + p.widths[2] + p.widths[3];
  const int64_t total = p.rows * width;
  const float inverse_normalizer = 1.f / p.normalizer;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kThreads) {
    const int64_t r = i / width;
    int64_t c = i % width;
    int segment = 0;
    while (segment < 3 && c >= p.widths[segment]) c -= p.widths[segment++];
    const float x = Element<E>::load(p.inputs[segment], r * p.row_strides[segment] + c);
    if (segment < 3) {
      Element<E>::store(p.swished[segment], r * p.widths[segment] + c, silu(x));
    } else {
      // As ATen rounds them: log_sigmoid, the division (a product with the reciprocal), exp, 1 − e.
      const float log_sigmoid = Element<E>::round(fminf(x, 0.f) - log1pf(expf(-fabsf(x))));
      const float g = Element<E>::round(log_sigmoid * inverse_normalizer);
      const float e = Element<E>::round(expf(g));
      Element<E>::store(p.g, r * p.widths[3] + c, g);
      Element<E>::store(p.s, r * p.widths[3] + c, 1.f - e);
    }
  }
}

int blocks_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? blocks : 65535);
}

template <template <class> class Launch, class P>
cudaError_t dispatch(const P& p, cudaStream_t stream) {
  switch (p.element) {
    case EpilogueElement::bfloat16: Launch<__nv_bfloat16>::run(p, stream); break;
    case EpilogueElement::float16: Launch<__half>::run(p, stream); break;
    default: Launch<float>::run(p, stream); break;
  }
  return cudaGetLastError();
}

// The x blocks cover a row's vectors; the y blocks (at most 65535) stride over the rows.
dim3 row_grid(int64_t rows, int64_t vectors) {
  const int64_t x = (vectors + kThreads - 1) / kThreads;
  const int64_t y = rows < 65535 ? rows : 65535;
  return dim3(static_cast<unsigned>(x < 65535 ? x : 65535), static_cast<unsigned>(y));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether every row of every operand starts on 16 bytes, so that Pack<E, 16 / sizeof(E)> serves.
template <class E>
bool vectorizable(int64_t columns, std::initializer_list<int64_t> row_strides, std::initializer_list<const void*> pointers) {
  constexpr int64_t V = 16 / sizeof(E);
  if (columns % V != 0) return false;
  for (int64_t stride : row_strides) {
    if (stride % V != 0) return false;
  }
  for (const void* p : pointers) {
    if (p != nullptr && !aligned16(p)) return false;
  }
  return true;
}

template <class E> struct LaunchSwiglu {
  static void run(const SwigluParams& p, cudaStream_t s) {
    constexpr int V = 16 / sizeof(E);
    if (vectorizable<E>(p.columns, {p.gate_row_stride, p.up_row_stride}, {p.gate, p.up, p.out})) {
      swiglu_kernel<E, V><<<row_grid(p.rows, p.columns / V), kThreads, 0, s>>>(p);
    } else {
      swiglu_kernel<E, 1><<<row_grid(p.rows, p.columns), kThreads, 0, s>>>(p);
    }
  }
};
template <class E> struct LaunchSwigluBackward {
  static void run(const SwigluBackwardParams& p, cudaStream_t s) {
    constexpr int V = 16 / sizeof(E);
    if (vectorizable<E>(p.columns, {p.gate_row_stride, p.up_row_stride, p.grad_out_row_stride},
                        {p.gate, p.up, p.grad_out, p.grad_gate, p.grad_up, p.product})) {
      swiglu_backward_kernel<E, V><<<row_grid(p.rows, p.columns / V), kThreads, 0, s>>>(p);
    } else {
      swiglu_backward_kernel<E, 1><<<row_grid(p.rows, p.columns), kThreads, 0, s>>>(p);
    }
  }
};
template <class E> struct LaunchRowNorm {
  static void run(const RowNormParams& p, cudaStream_t s) { row_norm_kernel<E><<<static_cast<unsigned>(p.rows), kThreads, 0, s>>>(p); }
};
template <class E> struct LaunchGsaActivations {
  static void run(const GsaActivationParams& p, cudaStream_t s) {
    const int64_t width = p.widths[0] + p.widths[1] + p.widths[2] + p.widths[3];
    gsa_activations_kernel<E><<<blocks_for(p.rows * width), kThreads, 0, s>>>(p);
  }
};

}  // namespace

cudaError_t swiglu_product(const SwigluParams& params, cudaStream_t stream) {
  if (params.rows * params.columns == 0) return cudaSuccess;
  return dispatch<LaunchSwiglu>(params, stream);
}

cudaError_t swiglu_product_backward(const SwigluBackwardParams& params, cudaStream_t stream) {
  if (params.rows * params.columns == 0) return cudaSuccess;
  return dispatch<LaunchSwigluBackward>(params, stream);
}

cudaError_t row_rms_norm(const RowNormParams& params, cudaStream_t stream) {
  if (params.rows == 0 || params.columns == 0) return cudaSuccess;
  return dispatch<LaunchRowNorm>(params, stream);
}

cudaError_t gsa_activations(const GsaActivationParams& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  return dispatch<LaunchGsaActivations>(params, stream);
}

}  // namespace lintime::cuda
