// Pieces shared by the fused Taylor linear attention kernels (prefill and backward): the chunk
// and feature sizes, BASED's feature map φ in its symmetric form built into shared memory, the
// tile loads, and the mapping of symmetric state rows back to BASED's 273 features.
//
// The symmetric form: φ(x) = [x_i x_j c_ij (i ≤ j), 1, x / 2, zeros] with c_ii = 1 / (4 √2) and
// c_ij = 1 / 4 (i < j) has the same inner products as BASED's [1, x / 2, vec(x ⊗ x) / (4 √2)]
// (the equal terms x_i x_j and x_j x_i of the full map fold into one feature √2 the size), with
// 153 features instead of 273. Pair p enumerates (i, j), i ≤ j, row by row.
#pragma once

#include "ops/based/cuda/taylor_cuda.h"
#include "ops/gsa/cuda/async_copy.cuh"
#include "ops/gsa/cuda/warp_mma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <utility>

namespace lintime::cuda::taylor {

constexpr int kThreads = 256;                     // 8 warps
constexpr int kTokens = 64;                       // tokens per chunk
constexpr int kD = kTaylorFeatureDim;             // 16
constexpr int kPairs = kD * (kD + 1) / 2;         // 136 products x_i x_j, i ≤ j
constexpr int kConstantRow = kPairs;              // 136: the constant feature
constexpr int kLinearRow = kPairs + 1;            // 137..152: x / 2
constexpr int kFeatures = 160;                    // 153 padded to 10 tiles of 16
constexpr int kValues = 64;                       // value columns per CTA
constexpr int kStateRowTiles = kFeatures / 16 / 2;  // a warp's share of a state: 5 row tiles ...
constexpr int kStateColumnTiles = kValues / 8 / 4;  // ... × 2 column tiles (80 rows × 16 columns)
constexpr int kFeatureGroups = kFeatures / 8;       // 20 groups of 8 features ...
constexpr int kGroupsPerWarp = kFeatureGroups / 4;  // ... 5 per warp, 32 tokens per warp
constexpr float kDiagonalScale = 0.17677669529663687f;  // 1 / (4 √2)
constexpr float kPairScale = 0.25f;                     // √2 / (4 √2)

__host__ __device__ constexpr int pair_first(int p) {
  int i = 0;
  while (p >= kD - i) p -= kD - i++;
  return i;
}
__host__ __device__ constexpr int pair_second(int p) {
  int i = 0;
  while (p >= kD - i) p -= kD - i++;
  return i + p;
}
// The pair index of (i, j) in either order.
__host__ __device__ constexpr int pair_index(int i, int j) {
  const int a = i < j ? i : j, b = i < j ? j : i;
  return a * kD - a * (a - 1) / 2 + (b - a);
}

// Two adjacent 16-bit elements as one 4-byte load.
template <class E>
__device__ __forceinline__ float2 to_float2(const E* src) {
  const uint32_t bits = *reinterpret_cast<const uint32_t*>(src);
  const E* pair = reinterpret_cast<const E*>(&bits);
  return {to_float(pair[0]), to_float(pair[1])};
}

// Feature F of φ(x) from the token's 16 values.
template <int F>
__device__ __forceinline__ float feature(const float (&x)[kD]) {
  if constexpr (F < kPairs) {
    constexpr int i = pair_first(F), j = pair_second(F);
    return (i == j ? kDiagonalScale : kPairScale) * x[i] * x[j];
  } else if constexpr (F == kConstantRow) {
    return 1.f;
  } else if constexpr (F < kLinearRow + kD) {
    return 0.5f * x[F - kLinearRow];
  } else {
    return 0.f;
  }
}

template <class E, int F0, int... K>
__device__ __forceinline__ void fill_features(E (&packed)[8], const float (&x)[kD], std::integer_sequence<int, K...>) {
  ((packed[K] = from_float<E>(feature<F0 + K>(x))), ...);
}
// Features 8 G .. 8 G + 7 as one 16-byte store, then the next groups up to kLast.
template <class E, int G, int kLast>
__device__ __forceinline__ void store_feature_groups(E* row, const float (&x)[kD]) {
  alignas(16) E packed[8];
  fill_features<E, 8 * G>(packed, x, std::make_integer_sequence<int, 8>{});
  *reinterpret_cast<uint4*>(row + 8 * G) = *reinterpret_cast<const uint4*>(packed);
  if constexpr (G < kLast) store_feature_groups<E, G + 1, kLast>(row, x);
}

// Row t of a [64, 16] tile as 16 floats.
template <class E>
__device__ __forceinline__ void load_row16(float (&row)[kD], SmemTile<E> x, int t) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const uint4 packed = *reinterpret_cast<const uint4*>(x.at(t, 8 * half));
    const E* values = reinterpret_cast<const E*>(&packed);
#pragma unroll
    for (int j = 0; j < 8; ++j) row[8 * half + j] = to_float(values[j]);
  }
}

// φ of the chunk's 64 rows of x [64, 16] into phi [64, 160]: warp w builds groups
// 5 (w / 2) .. + 4 of tokens 32 (w % 2) + lane (each warp's groups are known at compile time).
template <class E>
__device__ __forceinline__ void build_features(SmemTile<E> phi, SmemTile<E> x) {
  const int warp = threadIdx.x / 32, t = (warp % 2) * 32 + threadIdx.x % 32;
  float row[kD];
  load_row16(row, x, t);
  E* dst = phi.at(t, 0);
  switch (warp / 2) {
    case 0: store_feature_groups<E, 0, kGroupsPerWarp - 1>(dst, row); break;
    case 1: store_feature_groups<E, kGroupsPerWarp, 2 * kGroupsPerWarp - 1>(dst, row); break;
    case 2: store_feature_groups<E, 2 * kGroupsPerWarp, 3 * kGroupsPerWarp - 1>(dst, row); break;
    default: store_feature_groups<E, 3 * kGroupsPerWarp, kFeatureGroups - 1>(dst, row); break;
  }
}

// dx_i for i = 4 P .. 4 P + 3 of a token from the gradient g [160] (fp32) with respect to its
// φ(x) and the token's x: dx_i = Σ_f ∂φ_f/∂x_i g_f, i.e.
// 0.5 g_linear(i) + 2 c_ii x_i g_(i,i) + Σ_{j≠i} c_ij x_j g_(i,j).
template <int P>
__device__ __forceinline__ void feature_gradient(float (&dx)[4], const float* g, const float (&x)[kD]) {
#pragma unroll
  for (int ii = 0; ii < 4; ++ii) {
    const int i = 4 * P + ii;
    float sum = 0.5f * g[kLinearRow + i];
#pragma unroll
    for (int j = 0; j < kD; ++j) {
      const float scale = i == j ? 2.f * kDiagonalScale : kPairScale;
      sum += scale * x[j] * g[pair_index(i, j)];
    }
    dx[ii] = sum;
  }
}
// The same with the quarter P known only at run time (warp-uniform).
__device__ __forceinline__ void feature_gradient(int part, float (&dx)[4], const float* g, const float (&x)[kD]) {
  switch (part) {
    case 0: feature_gradient<0>(dx, g, x); break;
    case 1: feature_gradient<1>(dx, g, x); break;
    case 2: feature_gradient<2>(dx, g, x); break;
    default: feature_gradient<3>(dx, g, x); break;
  }
}

// z += Σ_{t < len} w_t φ(x_t) over a chunk's features phi [64, 160] (w_t = 1 when weight is
// null), z kept as two partial sums z_parts [2][160] (tokens 0..31, 32..63): threads 0..159 each
// own one pair of features and one half of the tokens, the same ones every chunk.
template <class E>
__device__ __forceinline__ void add_feature_sums(float* z_parts, SmemTile<E> phi, int len, const float* weight) {
  if (threadIdx.x >= kFeatures) return;
  const int f = 2 * (threadIdx.x % (kFeatures / 2)), part = threadIdx.x / (kFeatures / 2);
  float2 sum = {0.f, 0.f};
  for (int t = part * 32; t < min(part * 32 + 32, len); ++t) {
    const float2 features = to_float2(phi.at(t, f));
    const float w = weight != nullptr ? weight[t] : 1.f;
    sum.x += features.x * w;
    sum.y += features.y * w;
  }
  z_parts[part * kFeatures + f] += sum.x;
  z_parts[part * kFeatures + f + 1] += sum.y;
}

// The sums of a warp's two accumulator rows (acc_row(0) and acc_row(2) of its 16-row slab at
// r0) over the quad's four lanes, stored into out[r0 + row] by each quad's first lane.
__device__ __forceinline__ void store_quad_row_sums(float* out, float (&sums)[2], int r0) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    sums[r] += __shfl_xor_sync(0xffffffffu, sums[r], 1);
    sums[r] += __shfl_xor_sync(0xffffffffu, sums[r], 2);
  }
  if (threadIdx.x % 4 == 0) {
    out[r0 + acc_row(0)] = sums[0];
    out[r0 + acc_row(2)] = sums[1];
  }
}

// out[t] = φ(x_t)·z for the chunk's 64 tokens (z in two partial sums): four threads per token,
// 40 features each.
template <class E>
__device__ __forceinline__ void features_dot_z(float* out, SmemTile<E> phi, const float* z_parts) {
  const int t = threadIdx.x / 4, part = threadIdx.x % 4;
  float sum = 0.f;
#pragma unroll
  for (int f = part * 40; f < part * 40 + 40; f += 2) {
    const float2 features = to_float2(phi.at(t, f));
    sum += features.x * (z_parts[f] + z_parts[kFeatures + f]) + features.y * (z_parts[f + 1] + z_parts[kFeatures + f + 1]);
  }
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  sum += __shfl_xor_sync(0xffffffffu, sum, 2);
  if (part == 0) out[t] = sum;
}

// Issues the copies of rows [start, start + len) of a [B, T, H, 16] tensor into a [64, 16] tile
// (rows past the end zero).
template <class E>
__device__ __forceinline__ void load_rows16(SmemTile<E> tile, const E* src, int64_t token0, int heads, int h, int start,
                                            int len) {
  for (int i = threadIdx.x; i < kTokens * 2; i += kThreads) {  // two 16-byte pieces per row
    const int t = i / 2, piece = i % 2;
    copy_async_16(tile.at(t, 8 * piece), src + ((token0 + start + min(t, len - 1)) * heads + h) * kD + 8 * piece,
                  t < len);
  }
}

// The same for columns [v0, v0 + 64) of a [B, T, H, V] tensor into a [64, 64] tile (columns past
// V zero too); 16-byte pieces when `vector` (V % 8 == 0 and the base 16-byte aligned), else
// element by element (synchronous).
template <class E>
__device__ __forceinline__ void load_rows_v(SmemTile<E> tile, const E* src, int64_t token0, int heads, int h,
                                            int value_dim, int v0, int start, int len, bool vector) {
  const int V = value_dim;
  if (vector) {
    for (int i = threadIdx.x; i < kTokens * kValues / 8; i += kThreads) {
      const int t = i / (kValues / 8), c = (i % (kValues / 8)) * 8;
      const bool valid = t < len && v0 + c < V;
      copy_async_16(tile.at(t, c), src + ((token0 + start + min(t, len - 1)) * heads + h) * V + (valid ? v0 + c : 0),
                    valid);
    }
  } else {
    for (int i = threadIdx.x; i < kTokens * kValues; i += kThreads) {
      const int t = i / kValues, c = i % kValues;
      *tile.at(t, c) = (t < len && v0 + c < V) ? src[((token0 + start + t) * heads + h) * V + v0 + c] : from_float<E>(0.f);
    }
  }
}

// Two adjacent 16-bit elements as one 4-byte store.
template <class E>
__device__ __forceinline__ void store_pair(E* dst, float x, float y) {
  const E pair[2] = {from_float<E>(x), from_float<E>(y)};
  *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(pair);
}

// A value split in two 16-bit parts: hi = round(a), lo = round(a − hi) (16 significant bits),
// stored as pairs of adjacent columns into two tiles.
template <class E>
__device__ __forceinline__ void store_split_pair(SmemTile<E> hi, SmemTile<E> lo, int row, int col, float a0, float a1) {
  const E h0 = from_float<E>(a0), h1 = from_float<E>(a1);
  store_pair(hi.at(row, col), to_float(h0), to_float(h1));
  store_pair(lo.at(row, col), a0 - to_float(h0), a1 - to_float(h1));
}

// Writes row `row` (the symmetric feature order) of a final state into BASED's 273-feature order
// [1, x / 2, x ⊗ x]: write(full_index, scale) once per full feature the row stands for.
template <class F>
__device__ __forceinline__ void for_each_full_feature(int row, F&& write) {
  if (row < kPairs) {
    const int i = pair_first(row), j = pair_second(row);
    if (i == j) {
      write(1 + kD + kD * i + i, 1.f);
    } else {  // the symmetric row holds x_i x_j / 4 = √2 times each of the two full features
      write(1 + kD + kD * i + j, 0.70710678118654752f);
      write(1 + kD + kD * j + i, 0.70710678118654752f);
    }
  } else if (row == kConstantRow) {
    write(0, 1.f);
  } else if (row < kLinearRow + kD) {
    write(1 + row - kLinearRow, 1.f);
  }
}

}  // namespace lintime::cuda::taylor
