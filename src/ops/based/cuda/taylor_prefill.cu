// Fused Taylor linear attention prefill (see taylor_cuda.h for the design).
#include "ops/based/cuda/taylor_cuda.h"
#include "ops/gsa/cuda/warp_mma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace lintime::cuda {
namespace {

constexpr int kThreadsTaylor = 256;        // 8 warps
constexpr int kTokens = 64;                // tokens per chunk
constexpr int kD = kTaylorFeatureDim;      // 16
constexpr int kFeatures = 288;             // 273 padded to 18 tiles of 16
constexpr int kRowTiles = kFeatures / 16;  // 18
constexpr int kValues = 64;                // value columns per CTA
constexpr int kColumns = 80;               // + the ones column (the normaliser) + zeros: 10 n-tiles
constexpr int kTileSlots = (kRowTiles + 7) / 8;  // state row tiles per warp: 3

template <class E>
struct Smem {
  static constexpr int kPadE = kPad<E>;
  static constexpr int q_ld = kD + kPadE, v_ld = kColumns + kPadE, phi_ld = kFeatures + kPadE;
  static constexpr int s_ld = kColumns + kPadE, a_ld = kTokens + kPadE, out_ld = kColumns + 4;
  static constexpr size_t q_bytes = sizeof(E) * kTokens * q_ld;
  static constexpr size_t v_bytes = sizeof(E) * kTokens * v_ld;
  static constexpr size_t phi_bytes = sizeof(E) * kTokens * phi_ld;
  static constexpr size_t s_bytes = sizeof(E) * kFeatures * s_ld;
  static constexpr size_t a_bytes = sizeof(E) * kTokens * a_ld;
  static constexpr size_t out_bytes = sizeof(float) * kTokens * out_ld;
  static constexpr size_t total = 2 * q_bytes + v_bytes + phi_bytes + 2 * s_bytes + 2 * a_bytes + out_bytes;
};

// Feature f of φ(x) for the 16-dim x (row of a shared tile): 1, x_i / 2, x_i x_j / (4 √2), 0 (padding).
template <class E>
__device__ __forceinline__ float taylor_feature(const E* x, int f) {
  if (f == 0) return 1.f;
  if (f <= kD) return to_float(x[f - 1]) * 0.5f;
  if (f < kTaylorFeatures) {
    const int pair = f - 1 - kD;
    return to_float(x[pair / kD]) * to_float(x[pair % kD]) * 0.17677669529663687f;  // 1 / (4 √2)
  }
  return 0.f;
}

// φ of the chunk's 64 rows of x into phi [64, 288].
template <class E>
__device__ __forceinline__ void build_features(SmemTile<E> phi, SmemTile<E> x) {
  for (int i = threadIdx.x; i < kTokens * kFeatures / 2; i += kThreadsTaylor) {
    const int t = i / (kFeatures / 2), f = (i % (kFeatures / 2)) * 2;
    const E* row = x.at(t, 0);
    *phi.at(t, f) = from_float<E>(taylor_feature(row, f));
    *phi.at(t, f + 1) = from_float<E>(taylor_feature(row, f + 1));
  }
}

template <class E>
__global__ void __launch_bounds__(kThreadsTaylor, 1) taylor_prefill_kernel(TaylorParams p) {
  using S = Smem<E>;
  const int tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, rows = warp % 4, half = warp / 4;
  const int H = p.heads, V = p.value_dim, T = p.seqlen;
  const int v0 = tile * kValues;
  extern __shared__ __align__(16) char smem[];
  char* next = smem;
  auto carve = [&](size_t bytes) { char* at = next; next += (bytes + 15) / 16 * 16; return at; };
  SmemTile<E> q_tile{reinterpret_cast<E*>(carve(S::q_bytes)), S::q_ld};
  SmemTile<E> k_tile{reinterpret_cast<E*>(carve(S::q_bytes)), S::q_ld};
  SmemTile<E> v_tile{reinterpret_cast<E*>(carve(S::v_bytes)), S::v_ld};
  SmemTile<E> phi{reinterpret_cast<E*>(carve(S::phi_bytes)), S::phi_ld};
  SmemTile<E> state_hi{reinterpret_cast<E*>(carve(S::s_bytes)), S::s_ld};
  SmemTile<E> state_lo{reinterpret_cast<E*>(carve(S::s_bytes)), S::s_ld};
  SmemTile<E> scores_hi{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  SmemTile<E> scores_lo{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  SmemTile<float> out{reinterpret_cast<float*>(carve(S::out_bytes)), S::out_ld};

  const E* q = static_cast<const E*>(p.q);
  const E* k = static_cast<const E*>(p.k);
  const E* v = static_cast<const E*>(p.v);
  E* o = static_cast<E*>(p.o);
  const int64_t token0 = int64_t{b} * T;

  // S rows 16 (warp + 8 i) .. of the 288 features, all 80 columns (column 64: z).
  float state[kTileSlots][kColumns / 8][4];
#pragma unroll
  for (int i = 0; i < kTileSlots; ++i) zero(state[i]);

  for (int start = 0; start < T; start += kTokens) {
    const int len = min(kTokens, T - start);
    __syncthreads();  // the previous chunk's readers of every tile are done
    // Tiles: q, k [64, 16]; v [64, 80] with the ones column at 64; zero rows past the end.
    for (int i = threadIdx.x; i < kTokens * kD; i += kThreadsTaylor) {
      const int t = i / kD, d = i % kD;
      const int64_t at = ((token0 + start + t) * H + h) * kD + d;
      *q_tile.at(t, d) = t < len ? q[at] : from_float<E>(0.f);
      *k_tile.at(t, d) = t < len ? k[at] : from_float<E>(0.f);
    }
    for (int i = threadIdx.x; i < kTokens * kColumns; i += kThreadsTaylor) {
      const int t = i / kColumns, c = i % kColumns;
      float value = 0.f;
      if (t < len) {
        if (c < kValues) {
          if (v0 + c < V) value = to_float(v[((token0 + start + t) * H + h) * V + v0 + c]);
        } else if (c == kValues) {
          value = 1.f;
        }
      }
      *v_tile.at(t, c) = from_float<E>(value);
    }
    // The state at the chunk start, split in two parts for the read-out.
#pragma unroll
    for (int i = 0; i < kTileSlots; ++i) {
      const int rt = warp + 8 * i;
      if (rt >= kRowTiles) continue;
#pragma unroll
      for (int j = 0; j < kColumns / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = rt * 16 + acc_row(e), c = acc_col(j, e);
          const E hi = from_float<E>(state[i][j][e]);
          *state_hi.at(r, c) = hi;
          *state_lo.at(r, c) = from_float<E>(state[i][j][e] - to_float(hi));
        }
      }
    }
    __syncthreads();
    build_features(phi, q_tile);
    __syncthreads();

    // o (and the normaliser in column 64) for rows 16 rows..: the features of this warp's half.
    float acc[kColumns / 8][4];
    zero(acc);
    {
      constexpr int kHalfFeatures = kFeatures / 2;  // 144
      SmemTile<E> phi_half{phi.data + half * kHalfFeatures, phi.ld};
      SmemTile<E> hi_half{state_hi.data + half * kHalfFeatures * state_hi.ld, state_hi.ld};
      SmemTile<E> lo_half{state_lo.data + half * kHalfFeatures * state_lo.ld, state_lo.ld};
      warp_mma<E, kColumns / 8>(acc, phi_half, false, rows * 16, lo_half, false, 0, kHalfFeatures);
      warp_mma<E, kColumns / 8>(acc, phi_half, false, rows * 16, hi_half, false, 0, kHalfFeatures);
    }
    // A_ts = 1 + s + s²/2, s = q_t·k_s / 4, for s ≤ t inside the sequence: this warp's 32 columns.
    {
      float s_acc[4][4];
      zero(s_acc);
      warp_mma<E, 4>(s_acc, q_tile, false, rows * 16, k_tile, true, half * 32, kD);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int t = rows * 16 + acc_row(e), s = half * 32 + acc_col(j, e);
          const float x = s_acc[j][e] * 0.25f;
          const float a = (s <= t && s < len) ? 1.f + x + 0.5f * x * x : 0.f;
          const E hi = from_float<E>(a);
          *scores_hi.at(t, s) = hi;
          *scores_lo.at(t, s) = from_float<E>(a - to_float(hi));
        }
      }
    }
    __syncthreads();
    {
      SmemTile<E> hi_half{scores_hi.data + half * 32, scores_hi.ld};
      SmemTile<E> lo_half{scores_lo.data + half * 32, scores_lo.ld};
      SmemTile<E> v_half{v_tile.data + half * 32 * v_tile.ld, v_tile.ld};
      warp_mma<E, kColumns / 8>(acc, lo_half, false, rows * 16, v_half, false, 0, 32);
      warp_mma<E, kColumns / 8>(acc, hi_half, false, rows * 16, v_half, false, 0, 32);
    }
    // The two halves' partial sums meet in `out`: the first writes, the second adds below.
    if (half == 0) {
#pragma unroll
      for (int j = 0; j < kColumns / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) *out.at(rows * 16 + acc_row(e), acc_col(j, e)) = acc[j][e];
      }
    }
    __syncthreads();  // φ(q) read by every warp; out written by the first half
    build_features(phi, k_tile);
    if (half == 1) {
#pragma unroll
      for (int j = 0; j < kColumns / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) *out.at(rows * 16 + acc_row(e), acc_col(j, e)) += acc[j][e];
      }
    }
    __syncthreads();
    // S += φ(k)ᵀ [v | 1].
#pragma unroll
    for (int i = 0; i < kTileSlots; ++i) {
      const int rt = warp + 8 * i;
      if (rt < kRowTiles) warp_mma<E, kColumns / 8>(state[i], phi, true, rt * 16, v_tile, false, 0, kTokens);
    }
    // o = numerator / (normaliser + eps), or the numerator alone.
    for (int i = threadIdx.x; i < kTokens * kValues; i += kThreadsTaylor) {
      const int t = i / kValues, c = i % kValues;
      if (t >= len || v0 + c >= V) continue;
      float value = *out.at(t, c);
      if (p.normalize) value /= *out.at(t, kValues) + p.eps;
      o[((token0 + start + t) * H + h) * V + v0 + c] = from_float<E>(value);
    }
  }
  // Final S [B, H, 273, V] and z [B, H, 273] (z from the first value tile).
  if (p.final_state != nullptr) {
#pragma unroll
    for (int i = 0; i < kTileSlots; ++i) {
      const int rt = warp + 8 * i;
      if (rt >= kRowTiles) continue;
#pragma unroll
      for (int j = 0; j < kColumns / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int f = rt * 16 + acc_row(e), c = acc_col(j, e);
          if (f >= kTaylorFeatures) continue;
          const int64_t base = (int64_t{b} * H + h) * kTaylorFeatures + f;
          if (c < kValues && v0 + c < V) p.final_state[base * V + v0 + c] = state[i][j][e];
          if (c == kValues && tile == 0 && p.final_normalizer != nullptr) p.final_normalizer[base] = state[i][j][e];
        }
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
