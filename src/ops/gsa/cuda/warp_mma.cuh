// Warp-level matrix products on tensor cores (mma.sync, sm_80 and later) over tiles in shared
// memory, for the element types of the GSA kernels:
//   bf16 / fp16 operands: mma.m16n8k16 with fp32 accumulation, fragments loaded by ldmatrix;
//   fp32 operands: FMA on the CUDA cores in the same accumulator layout. fp32 inputs are held to
//   the accuracy of an fp32 reference, which tf32 products (even split three ways, "3xTF32",
//   measured 4-30x the reference's error) do not reach.
// A warp computes a 16-row slab of C = A·B: acc[n_tile][4] holds C rows r0..r0+15, columns
// 8·n_tile..8·n_tile+7 in the mma accumulator layout (see acc_row / acc_col).
// Operands are row-major tiles in shared memory; `Transposed` says the tile holds the matrix
// transposed (A stored [k][m], B stored [n][k]). Rows are padded (kPad) so that ldmatrix is
// free of bank conflicts and every row starts on 16 bytes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace lintime::cuda {

template <class E> struct ElementTraits;
template <> struct ElementTraits<__nv_bfloat16> {
  __device__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};
template <> struct ElementTraits<__half> {
  __device__ static float to_float(__half x) { return __half2float(x); }
  __device__ static __half from_float(float x) { return __float2half_rn(x); }
};
template <> struct ElementTraits<float> {
  __device__ static float to_float(float x) { return x; }
  __device__ static float from_float(float x) { return x; }
};

template <class E> __device__ __forceinline__ float to_float(E x) { return ElementTraits<E>::to_float(x); }
template <class E> __device__ __forceinline__ E from_float(float x) { return ElementTraits<E>::from_float(x); }

// Row padding in elements: 16 bytes.
template <class E> constexpr int kPad = 16 / sizeof(E);

// Position of accumulator element e (0..3) of tile n_tile inside the warp's 16-row slab.
__device__ __forceinline__ int acc_row(int e) { return (threadIdx.x & 31) / 4 + (e >= 2 ? 8 : 0); }
__device__ __forceinline__ int acc_col(int n_tile, int e) {
  return n_tile * 8 + 2 * (threadIdx.x & 3) + (e & 1);
}

template <int NT>
__device__ __forceinline__ void zero(float (&acc)[NT][4]) {
#pragma unroll
  for (int n = 0; n < NT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
}

namespace detail {

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

template <class E>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace detail

// A shared-memory tile: element (row, col) at data[row * ld + col].
template <class E>
struct SmemTile {
  E* data;
  int ld;
  __device__ E* at(int row, int col) const { return data + row * ld + col; }
};

// acc[16 x 8·NT] += A[r0.., 0..kdim) · B[0..kdim, n0..n0 + 8·NT).
// A: a_transposed ? a holds A stored [k][m] : a holds A stored [m][k].
// B: b_transposed ? b holds B stored [n][k] : b holds B stored [k][n].
// kdim must be a multiple of 16 and NT even.
template <class E, int NT>
__device__ __forceinline__ void warp_mma(float (&acc)[NT][4], SmemTile<E> a, bool a_transposed,
                                         int r0, SmemTile<E> b, bool b_transposed, int n0,
                                         int kdim) {
  static_assert(NT % 2 == 0, "warp_mma works on pairs of 8-column tiles");
  const int lane = threadIdx.x & 31;
  if constexpr (sizeof(E) == 2) {
    const int i = lane & 7, j = lane >> 3;
    for (int k0 = 0; k0 < kdim; k0 += 16) {
      uint32_t af[4];
      if (!a_transposed) {
        detail::ldmatrix_x4(af, a.at(r0 + (lane & 15), k0 + (lane >> 4) * 8));
      } else {
        detail::ldmatrix_x4_trans(af, a.at(k0 + i + (j >> 1) * 8, r0 + (j & 1) * 8));
      }
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        uint32_t bf[4];
        const int nb = n0 + n * 8;
        if (b_transposed) {
          detail::ldmatrix_x4(bf, b.at(nb + i + (j >> 1) * 8, k0 + (j & 1) * 8));
        } else {
          detail::ldmatrix_x4_trans(bf, b.at(k0 + i + (j & 1) * 8, nb + (j >> 1) * 8));
        }
        detail::mma_16816<E>(acc[n], af, bf[0], bf[1]);
        detail::mma_16816<E>(acc[n + 1], af, bf[2], bf[3]);
      }
    }
  } else {
    const int g = lane >> 2, c = lane & 3;
    for (int k = 0; k < kdim; ++k) {
      const float a0 = a_transposed ? *a.at(k, r0 + g) : *a.at(r0 + g, k);
      const float a1 = a_transposed ? *a.at(k, r0 + g + 8) : *a.at(r0 + g + 8, k);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int col = n0 + n * 8 + 2 * c;
        const float b0 = b_transposed ? *b.at(col, k) : *b.at(k, col);
        const float b1 = b_transposed ? *b.at(col + 1, k) : *b.at(k, col + 1);
        acc[n][0] = fmaf(a0, b0, acc[n][0]);
        acc[n][1] = fmaf(a0, b1, acc[n][1]);
        acc[n][2] = fmaf(a1, b0, acc[n][2]);
        acc[n][3] = fmaf(a1, b1, acc[n][3]);
      }
    }
  }
}

// acc[i] (rows r0 + 16 i .., MT slabs of 16) += A · B for 16-bit operands: as MT calls of warp_mma,
// with each k-step's B fragments loaded once for all the slabs.
template <class E, int MT, int NT>
__device__ __forceinline__ void warp_mma_rows(float (&acc)[MT][NT][4], SmemTile<E> a, bool a_transposed,
                                              int r0, SmemTile<E> b, bool b_transposed, int n0, int kdim) {
  static_assert(sizeof(E) == 2, "warp_mma_rows is for bf16 / fp16 operands");
  static_assert(NT % 2 == 0, "warp_mma_rows works on pairs of 8-column tiles");
  const int lane = threadIdx.x & 31;
  const int i = lane & 7, j = lane >> 3;
  for (int k0 = 0; k0 < kdim; k0 += 16) {
    uint32_t bf[NT / 2][4];
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
      const int nb = n0 + n * 8;
      if (b_transposed) {
        detail::ldmatrix_x4(bf[n / 2], b.at(nb + i + (j >> 1) * 8, k0 + (j & 1) * 8));
      } else {
        detail::ldmatrix_x4_trans(bf[n / 2], b.at(k0 + i + (j & 1) * 8, nb + (j >> 1) * 8));
      }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int rm = r0 + 16 * mt;
      uint32_t af[4];
      if (!a_transposed) {
        detail::ldmatrix_x4(af, a.at(rm + (lane & 15), k0 + (lane >> 4) * 8));
      } else {
        detail::ldmatrix_x4_trans(af, a.at(k0 + i + (j >> 1) * 8, rm + (j & 1) * 8));
      }
#pragma unroll
      for (int n = 0; n < NT; n += 2) {
        detail::mma_16816<E>(acc[mt][n], af, bf[n / 2][0], bf[n / 2][1]);
        detail::mma_16816<E>(acc[mt][n + 1], af, bf[n / 2][2], bf[n / 2][3]);
      }
    }
  }
}

// acc[16 x 8·NT] += A · B where the operands are produced element by element by functors
// a(row, k) and b(k, col) returning floats (operands transformed on load, e.g. rescaled by
// per-element decays). Rounded to E before the product, as a stored E tile would be.
template <class E, int NT, class LoadA, class LoadB>
__device__ __forceinline__ void warp_mma_generated(float (&acc)[NT][4], LoadA load_a, int r0,
                                                   LoadB load_b, int n0, int kdim) {
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, c = lane & 3;
  if constexpr (sizeof(E) == 2) {
    auto pack = [](float lo, float hi) -> uint32_t {
      E l = from_float<E>(lo), h = from_float<E>(hi);
      return static_cast<uint32_t>(*reinterpret_cast<uint16_t*>(&l)) |
             (static_cast<uint32_t>(*reinterpret_cast<uint16_t*>(&h)) << 16);
    };
    for (int k0 = 0; k0 < kdim; k0 += 16) {
      const int kc = k0 + 2 * c;
      const uint32_t af[4] = {
          pack(load_a(r0 + g, kc), load_a(r0 + g, kc + 1)),
          pack(load_a(r0 + g + 8, kc), load_a(r0 + g + 8, kc + 1)),
          pack(load_a(r0 + g, kc + 8), load_a(r0 + g, kc + 9)),
          pack(load_a(r0 + g + 8, kc + 8), load_a(r0 + g + 8, kc + 9))};
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int col = n0 + n * 8 + g;
        detail::mma_16816<E>(acc[n], af, pack(load_b(kc, col), load_b(kc + 1, col)),
                             pack(load_b(kc + 8, col), load_b(kc + 9, col)));
      }
    }
  } else {
    for (int k = 0; k < kdim; ++k) {
      const float a0 = load_a(r0 + g, k), a1 = load_a(r0 + g + 8, k);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int col = n0 + n * 8 + 2 * c;
        const float b0 = load_b(k, col), b1 = load_b(k, col + 1);
        acc[n][0] = fmaf(a0, b0, acc[n][0]);
        acc[n][1] = fmaf(a0, b1, acc[n][1]);
        acc[n][2] = fmaf(a1, b0, acc[n][2]);
        acc[n][3] = fmaf(a1, b1, acc[n][3]);
      }
    }
  }
}

}  // namespace lintime::cuda
