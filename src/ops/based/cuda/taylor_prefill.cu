// Fused Taylor linear attention prefill (see taylor_cuda.h for the design).
#include "ops/based/cuda/taylor_cuda.h"
#include "ops/based/cuda/taylor_tiles.cuh"

namespace lintime::cuda {
namespace {

using namespace taylor;

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

template <class E>
__global__ void __launch_bounds__(kThreads, 2) taylor_prefill_kernel(TaylorParams p) {
  using S = Smem<E>;
  const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32;
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
  for (int i = threadIdx.x; i < 2 * kFeatures; i += kThreads) z_parts[i] = 0.f;
  load_rows16(q_tile_of(0), static_cast<const E*>(p.q), token0, H, h, 0, min(kTokens, T));
  load_rows16(k_tile_of(0), static_cast<const E*>(p.k), token0, H, h, 0, min(kTokens, T));
  load_rows_v(v_tile_of(0), static_cast<const E*>(p.v), token0, H, h, V, v0, 0, min(kTokens, T), vector_v);
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
      const int next_len = min(kTokens, T - start - kTokens), b1 = (chunk + 1) % 2;
      load_rows16(q_tile_of(b1), static_cast<const E*>(p.q), token0, H, h, start + kTokens, next_len);
      load_rows16(k_tile_of(b1), static_cast<const E*>(p.k), token0, H, h, start + kTokens, next_len);
      load_rows_v(v_tile_of(b1), static_cast<const E*>(p.v), token0, H, h, V, v0, start + kTokens, next_len, vector_v);
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
          store_split_pair(scores_hi, scores_lo, t, s, a[0], a[1]);
        }
      }
      store_quad_row_sums(row_sums + (1 + half) * kTokens, sums, m * 16);
    }
    // The normaliser's part from earlier chunks, φ(q_t)·z.
    if (p.normalize) features_dot_z(row_sums, phi, z_parts);
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
    // z += Σ_t φ(k_t) over the chunk's tokens.
    add_feature_sums(z_parts, phi, len, nullptr);
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
      for (int row = threadIdx.x; row < kFeatures; row += kThreads) {
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
  taylor_prefill_kernel<E><<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

size_t taylor_prefill_smem_bytes() { return Smem<__nv_bfloat16>::total; }

cudaError_t taylor_prefill(const TaylorParams& params, cudaStream_t stream) {
  return params.half_precision ? launch<__half>(params, stream) : launch<__nv_bfloat16>(params, stream);
}

}  // namespace lintime::cuda
