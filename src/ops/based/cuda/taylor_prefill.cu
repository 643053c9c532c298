// Fused Taylor linear attention prefill (see taylor_cuda.h for the design).
#include "ops/based/cuda/taylor_cuda.h"
#include "ops/gsa/cuda/async_copy.cuh"
#include "ops/gsa/cuda/warp_mma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <utility>

namespace lintime::cuda {
namespace {

constexpr int kThreadsTaylor = 256;    // 8 warps
constexpr int kTokens = 64;            // tokens per chunk
constexpr int kD = kTaylorFeatureDim;  // 16
constexpr int kPairs = kD * (kD + 1) / 2;                    // 136 products x_i x_j, i ≤ j
constexpr int kConstantRow = kPairs;                         // 136: the constant feature
constexpr int kLinearRow = kPairs + 1;                       // 137..152: x / 2
constexpr int kFeatures = 160;                               // 153 padded to 10 tiles of 16
constexpr int kValues = 64;                                  // value columns per CTA
constexpr int kStateRowTiles = kFeatures / 16 / 2;           // per warp: 5 row tiles (80 rows) ...
constexpr int kStateColumnTiles = kValues / 8 / 4;           // ... × 2 column tiles (16 columns)
constexpr int kFeatureGroups = kFeatures / 8;                // 20 groups of 8 features ...
constexpr int kGroupsPerWarp = kFeatureGroups / 4;           // ... 5 per warp, 32 tokens per warp

// The symmetric feature map: φ(x) = [x_i x_j c_ij (i ≤ j), 1, x / 2, zeros] with c_ii = 1 / (4 √2)
// and c_ij = 1 / 4 (i < j) has the same inner products as BASED's [1, x / 2, vec(x ⊗ x) / (4 √2)]
// (the two equal terms x_i x_j and x_j x_i of the full map fold into one of √2 the size) with
// 153 features instead of 273. Pair p enumerates (i, j), i ≤ j, row by row.
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
constexpr float kDiagonalScale = 0.17677669529663687f;  // 1 / (4 √2)
constexpr float kPairScale = 0.25f;                     // √2 / (4 √2)

template <class E>
struct Smem {
  static constexpr int kPadE = kPad<E>;
  static constexpr int q_ld = kD + kPadE, v_ld = kValues + kPadE, phi_ld = kFeatures + kPadE;
  static constexpr int s_ld = kValues + kPadE, a_ld = kTokens + kPadE;
  static constexpr size_t q_bytes = sizeof(E) * kTokens * q_ld;
  static constexpr size_t v_bytes = sizeof(E) * kTokens * v_ld;
  static constexpr size_t phi_bytes = sizeof(E) * kTokens * phi_ld;
  static constexpr size_t s_bytes = sizeof(E) * kFeatures * s_ld;
  static constexpr size_t a_bytes = sizeof(E) * kTokens * a_ld;
  static constexpr size_t z_bytes = sizeof(float) * 2 * kFeatures;  // z in two partial sums
  static constexpr size_t row_bytes = sizeof(float) * 3 * kTokens;  // φ(q)·z and A's two half-row sums
  // q, k and v are double-buffered: the next chunk's tiles load while this one computes. Under
  // 113 KB so that two CTAs share an SM.
  static constexpr size_t buffer_bytes = 2 * q_bytes + v_bytes;  // multiples of 16 bytes
  static constexpr size_t total = 2 * buffer_bytes + phi_bytes + s_bytes + 2 * a_bytes + z_bytes + row_bytes;
  static_assert(q_bytes % 16 == 0 && v_bytes % 16 == 0, "tiles start on 16 bytes");
  static_assert(total <= 113 * 1024, "two CTAs per SM");
};

// Feature F of φ(x) (see above) from the token's 16 values.
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

// Features 8 G .. 8 G + 7 as one 16-byte store, then the next groups up to kLast.
template <class E, int F0, int... K>
__device__ __forceinline__ void fill_features(E (&packed)[8], const float (&x)[kD], std::integer_sequence<int, K...>) {
  ((packed[K] = from_float<E>(feature<F0 + K>(x))), ...);
}
template <class E, int G, int kLast>
__device__ __forceinline__ void store_feature_groups(E* row, const float (&x)[kD]) {
  alignas(16) E packed[8];
  fill_features<E, 8 * G>(packed, x, std::make_integer_sequence<int, 8>{});
  *reinterpret_cast<uint4*>(row + 8 * G) = *reinterpret_cast<const uint4*>(packed);
  if constexpr (G < kLast) store_feature_groups<E, G + 1, kLast>(row, x);
}

// φ of the chunk's 64 rows of x [64, 16] into phi [64, 160]: warp w builds groups
// 5 (w / 2) .. + 4 of tokens 32 (w % 2) + lane (each warp's groups are known at compile time).
template <class E>
__device__ __forceinline__ void build_features(SmemTile<E> phi, SmemTile<E> x) {
  const int warp = threadIdx.x / 32, t = (warp % 2) * 32 + threadIdx.x % 32;
  float row[kD];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const uint4 packed = *reinterpret_cast<const uint4*>(x.at(t, 8 * half));
    const E* values = reinterpret_cast<const E*>(&packed);
#pragma unroll
    for (int j = 0; j < 8; ++j) row[8 * half + j] = to_float(values[j]);
  }
  E* dst = phi.at(t, 0);
  switch (warp / 2) {
    case 0: store_feature_groups<E, 0, kGroupsPerWarp - 1>(dst, row); break;
    case 1: store_feature_groups<E, kGroupsPerWarp, 2 * kGroupsPerWarp - 1>(dst, row); break;
    case 2: store_feature_groups<E, 2 * kGroupsPerWarp, 3 * kGroupsPerWarp - 1>(dst, row); break;
    default: store_feature_groups<E, 3 * kGroupsPerWarp, kFeatureGroups - 1>(dst, row); break;
  }
}

// Issues the copies of chunk [start, start + len) of q, k [64, 16] and v [64, 64] into the tiles
// (rows past the end zero).
template <class E>
__device__ __forceinline__ void load_chunk(SmemTile<E> q_tile, SmemTile<E> k_tile, SmemTile<E> v_tile,
                                           const TaylorParams& p, int64_t token0, int h, int v0, int start,
                                           int len, bool vector_v) {
  const E* q = static_cast<const E*>(p.q);
  const E* k = static_cast<const E*>(p.k);
  const E* v = static_cast<const E*>(p.v);
  const int H = p.heads, V = p.value_dim;
  for (int i = threadIdx.x; i < kTokens * 2; i += kThreadsTaylor) {  // two 16-byte pieces per row
    const int t = i / 2, piece = i % 2;
    const int64_t at = ((token0 + start + min(t, len - 1)) * H + h) * kD + 8 * piece;
    copy_async_16(q_tile.at(t, 8 * piece), q + at, t < len);
    copy_async_16(k_tile.at(t, 8 * piece), k + at, t < len);
  }
  if (vector_v) {
    for (int i = threadIdx.x; i < kTokens * kValues / 8; i += kThreadsTaylor) {
      const int t = i / (kValues / 8), c = (i % (kValues / 8)) * 8;
      const bool valid = t < len && v0 + c < V;
      copy_async_16(v_tile.at(t, c), v + ((token0 + start + min(t, len - 1)) * H + h) * V + (valid ? v0 + c : 0), valid);
    }
  } else {
    for (int i = threadIdx.x; i < kTokens * kValues; i += kThreadsTaylor) {
      const int t = i / kValues, c = i % kValues;
      *v_tile.at(t, c) = (t < len && v0 + c < V) ? v[((token0 + start + t) * H + h) * V + v0 + c] : from_float<E>(0.f);
    }
  }
}

// Two adjacent 16-bit elements as one 4-byte load.
template <class E>
__device__ __forceinline__ float2 to_float2(const E* src) {
  const uint32_t bits = *reinterpret_cast<const uint32_t*>(src);
  const E* pair = reinterpret_cast<const E*>(&bits);
  return {to_float(pair[0]), to_float(pair[1])};
}

// Two adjacent 16-bit elements as one 4-byte store.
template <class E>
__device__ __forceinline__ void store_pair(E* dst, float x, float y) {
  const E pair[2] = {from_float<E>(x), from_float<E>(y)};
  *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(pair);
}

// Writes row `row` (the kernel's symmetric feature order) of a final state into BASED's 273-feature
// order [1, x / 2, x ⊗ x]: write(full_index, scale) once per full feature the row stands for.
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

template <class E>
__global__ void __launch_bounds__(kThreadsTaylor, 2) taylor_prefill_kernel(TaylorParams p) {
  using S = Smem<E>;
  const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Read-out: rows 16 m of the chunk, value columns 32 half ... ; state: rows 80 half, columns 16 m.
  const int m = warp % 4, half = warp / 4;
  const int H = p.heads, V = p.value_dim, T = p.seqlen;
  const int v0 = tile * kValues;
  extern __shared__ __align__(16) char smem[];
  char* next = smem;
  auto carve = [&](size_t bytes) { char* at = next; next += (bytes + 15) / 16 * 16; return at; };
  // Buffer i's q, k and v tiles at buffers + i · kBufferBytes (computed, so that no array of
  // tiles indexed at run time goes to local memory).
  char* buffers = carve(2 * S::buffer_bytes);
  auto q_tile_of = [&](int i) { return SmemTile<E>{reinterpret_cast<E*>(buffers + i * S::buffer_bytes), S::q_ld}; };
  auto k_tile_of = [&](int i) {
    return SmemTile<E>{reinterpret_cast<E*>(buffers + i * S::buffer_bytes + S::q_bytes), S::q_ld};
  };
  auto v_tile_of = [&](int i) {
    return SmemTile<E>{reinterpret_cast<E*>(buffers + i * S::buffer_bytes + 2 * S::q_bytes), S::v_ld};
  };
  SmemTile<E> phi{reinterpret_cast<E*>(carve(S::phi_bytes)), S::phi_ld};
  SmemTile<E> state_tile{reinterpret_cast<E*>(carve(S::s_bytes)), S::s_ld};
  SmemTile<E> scores_hi{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  SmemTile<E> scores_lo{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  float* z_parts = reinterpret_cast<float*>(carve(S::z_bytes));   // [2][160]: tokens 0..31, 32..63
  float* row_sums = reinterpret_cast<float*>(carve(S::row_bytes));  // [3][64]: φ(q)·z, A's halves

  E* o = static_cast<E*>(p.o);
  const int64_t token0 = int64_t{b} * T;
  // 16-byte pieces of v when every row of the tile starts on 16 bytes.
  const bool vector_v = V % 8 == 0 && reinterpret_cast<uintptr_t>(p.v) % 16 == 0;
  for (int i = threadIdx.x; i < 2 * kFeatures; i += kThreadsTaylor) z_parts[i] = 0.f;
  load_chunk(q_tile_of(0), k_tile_of(0), v_tile_of(0), p, token0, h, v0, 0, min(kTokens, T), vector_v);
  commit_copies();

  // S rows 80 half + 16 i .., columns 16 m + 8 j .. of the 160 × 64 state.
  float state[kStateRowTiles][kStateColumnTiles][4];
#pragma unroll
  for (int i = 0; i < kStateRowTiles; ++i) zero(state[i]);

  for (int start = 0, chunk = 0; start < T; start += kTokens, ++chunk) {
    const int len = min(kTokens, T - start);
    const SmemTile<E> q_tile = q_tile_of(chunk % 2), k_tile = k_tile_of(chunk % 2), v_tile = v_tile_of(chunk % 2);
    // This chunk's tiles (issued a chunk ago) have landed, and after the barrier every thread
    // sees every thread's copies; the previous chunk's readers of every tile are done.
    wait_copies<0>();
    __syncthreads();
    if (start + kTokens < T) {  // the next chunk's tiles load while this one computes
      load_chunk(q_tile_of((chunk + 1) % 2), k_tile_of((chunk + 1) % 2), v_tile_of((chunk + 1) % 2), p, token0, h, v0,
                 start + kTokens, min(kTokens, T - start - kTokens), vector_v);
      commit_copies();
    }
    // The state at the chunk start, rounded once for the read-out (two parts measured 20% slower
    // for 1.1–1.4× less error, both within twice the reference's error in the dtype).
#pragma unroll
    for (int i = 0; i < kStateRowTiles; ++i) {
#pragma unroll
      for (int j = 0; j < kStateColumnTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          store_pair(state_tile.at(80 * half + 16 * i + acc_row(e), 16 * m + acc_col(j, e)), state[i][j][e],
                     state[i][j][e + 1]);
        }
      }
    }
    build_features(phi, q_tile);
    __syncthreads();

    // A_ts = 1 + s + s²/2, s = q_t·k_s / 4, for s ≤ t inside the sequence (rows 16 m, columns
    // 32 half), in two 16-bit parts for the product with v; its row sums (the normaliser's
    // intra-chunk part) from the unrounded values.
    {
      float s_acc[4][4];
      zero(s_acc);
      warp_mma<E, 4>(s_acc, q_tile, false, m * 16, k_tile, true, half * 32, kD);
      float sums[2] = {0.f, 0.f};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          const int t = m * 16 + acc_row(e), s = half * 32 + acc_col(j, e);
          float a[2];
#pragma unroll
          for (int d = 0; d < 2; ++d) {
            const float x = s_acc[j][e + d] * 0.25f;
            a[d] = (s + d <= t && s + d < len) ? 1.f + x + 0.5f * x * x : 0.f;
          }
          sums[e / 2] += a[0] + a[1];
          const E hi0 = from_float<E>(a[0]), hi1 = from_float<E>(a[1]);
          store_pair(scores_hi.at(t, s), to_float(hi0), to_float(hi1));
          store_pair(scores_lo.at(t, s), a[0] - to_float(hi0), a[1] - to_float(hi1));
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        sums[r] += __shfl_xor_sync(0xffffffffu, sums[r], 1);
        sums[r] += __shfl_xor_sync(0xffffffffu, sums[r], 2);
      }
      if (lane % 4 == 0) {
        row_sums[(1 + half) * kTokens + m * 16 + lane / 4] = sums[0];
        row_sums[(1 + half) * kTokens + m * 16 + lane / 4 + 8] = sums[1];
      }
    }
    // The normaliser's part from earlier chunks, φ(q_t)·z: four threads per token, 40 features each.
    if (p.normalize) {
      const int t = threadIdx.x / 4, part = threadIdx.x % 4;
      float sum = 0.f;
#pragma unroll
      for (int f = part * 40; f < part * 40 + 40; f += 2) {
        const float2 features = to_float2(phi.at(t, f));
        sum += features.x * (z_parts[f] + z_parts[kFeatures + f]) +
               features.y * (z_parts[f + 1] + z_parts[kFeatures + f + 1]);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if (part == 0) row_sums[t] = sum;
    }
    // o = φ(q) S + A v for rows 16 m, columns 32 half.
    float acc[4][4];
    zero(acc);
    warp_mma<E, 4>(acc, phi, false, m * 16, state_tile, false, half * 32, kFeatures);
    __syncthreads();  // A and the row sums written; φ(q) read by every warp
    warp_mma<E, 4>(acc, scores_lo, false, m * 16, v_tile, false, half * 32, kTokens);
    warp_mma<E, 4>(acc, scores_hi, false, m * 16, v_tile, false, half * 32, kTokens);
    // o = numerator / (normaliser + eps), or the numerator alone.
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int t = m * 16 + acc_row(e);
      if (t >= len) continue;
      const float scale =
          p.normalize ? 1.f / (row_sums[t] + row_sums[kTokens + t] + row_sums[2 * kTokens + t] + p.eps) : 1.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = half * 32 + acc_col(j, e);
        if (v0 + c >= V) continue;
        E* dst = o + ((token0 + start + t) * H + h) * V + v0 + c;
        if (vector_v) {  // V even: the pair is inside the row and 4-byte aligned
          store_pair(dst, acc[j][e] * scale, acc[j][e + 1] * scale);
        } else {
          dst[0] = from_float<E>(acc[j][e] * scale);
          if (v0 + c + 1 < V) dst[1] = from_float<E>(acc[j][e + 1] * scale);
        }
      }
    }
    build_features(phi, k_tile);
    __syncthreads();
    // S += φ(k)ᵀ v.
    warp_mma_rows<E, kStateRowTiles, kStateColumnTiles>(state, phi, true, 80 * half, v_tile, false, 16 * m, kTokens);
    // z += Σ_t φ(k_t) over the chunk's tokens: thread (pair of features, half of the tokens).
    if (threadIdx.x < kFeatures) {
      const int f = 2 * (threadIdx.x % (kFeatures / 2)), part = threadIdx.x / (kFeatures / 2);
      float2 sum = {0.f, 0.f};
      for (int t = part * 32; t < min(part * 32 + 32, len); ++t) {
        const float2 features = to_float2(phi.at(t, f));
        sum.x += features.x;
        sum.y += features.y;
      }
      z_parts[part * kFeatures + f] += sum.x;
      z_parts[part * kFeatures + f + 1] += sum.y;
    }
  }
  // Final S [B, H, 273, V] and z [B, H, 273] (z from the first value tile) in BASED's order.
  if (p.final_state != nullptr) {
    const int64_t base = (int64_t{b} * H + h) * kTaylorFeatures;
#pragma unroll
    for (int i = 0; i < kStateRowTiles; ++i) {
#pragma unroll
      for (int j = 0; j < kStateColumnTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = 80 * half + 16 * i + acc_row(e), c = 16 * m + acc_col(j, e);
          if (v0 + c >= V) continue;
          for_each_full_feature(row, [&](int feature, float scale) {
            p.final_state[(base + feature) * V + v0 + c] = scale * state[i][j][e];
          });
        }
      }
    }
    __syncthreads();  // the last chunk's z update
    if (tile == 0 && p.final_normalizer != nullptr) {
      for (int row = threadIdx.x; row < kFeatures; row += kThreadsTaylor) {
        const float z = z_parts[row] + z_parts[kFeatures + row];
        for_each_full_feature(row, [&](int feature, float scale) { p.final_normalizer[base + feature] = scale * z; });
      }
    }
  }
}

template <class E>
cudaError_t launch(const TaylorParams& p, cudaStream_t stream) {
  const size_t smem = Smem<E>::total;
  const cudaError_t status =
      cudaFuncSetAttribute(taylor_prefill_kernel<E>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (status != cudaSuccess) return status;
  const dim3 grid((p.value_dim + kValues - 1) / kValues, p.heads, p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || p.seqlen == 0) return cudaSuccess;
  taylor_prefill_kernel<E><<<grid, kThreadsTaylor, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

size_t taylor_prefill_smem_bytes() { return Smem<__nv_bfloat16>::total; }

cudaError_t taylor_prefill(const TaylorParams& params, cudaStream_t stream) {
  return params.half_precision ? launch<__half>(params, stream) : launch<__nv_bfloat16>(params, stream);
}

}  // namespace lintime::cuda
