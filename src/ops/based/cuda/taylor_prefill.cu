// Fused Taylor linear attention prefill (see taylor_cuda.h for the design).
#include "ops/based/cuda/taylor_cuda.h"
#include "ops/gsa/cuda/async_copy.cuh"
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
  // q, k and v are double-buffered: the next chunk's tiles load while this one computes.
  static constexpr size_t total = 2 * (2 * q_bytes + v_bytes) + phi_bytes + s_bytes + 2 * a_bytes + out_bytes;
};

// φ's features in the kernel's order (the state's rows): the 256 products x_i x_j / (4 √2) at
// 16 i + j, then 1 at 256, x_i / 2 at 257 + i, zeros up to 288. Products come first so that each
// row of them starts on 32 bytes; final states are written back in φ's order (1, x / 2, x ⊗ x).
constexpr int kConstantFeature = 256;
__device__ __forceinline__ int taylor_feature_index(int row) {  // kernel row -> φ's feature index
  return row < kConstantFeature ? 1 + kD + row : row - kConstantFeature;
}

// f(i, j, e, row, column) for every accumulator element state[i][j][e] of the warp's state row
// tiles warp + 8 i (row: the kernel's feature row; column: the value column, 64 = z).
template <class F>
__device__ __forceinline__ void for_each_state_element(int warp, F&& f) {
#pragma unroll
  for (int i = 0; i < kTileSlots; ++i) {
    const int tile = warp + 8 * i;
    if (tile >= kRowTiles) continue;
#pragma unroll
    for (int j = 0; j < kColumns / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) f(i, j, e, tile * 16 + acc_row(e), acc_col(j, e));
    }
  }
}

// Eight 16-bit elements as one 16-byte store.
template <class E>
__device__ __forceinline__ void store8(E* dst, const float (&x)[8]) {
  E packed[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) packed[j] = from_float<E>(x[j]);
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(packed);
}

// φ of the chunk's 64 rows of x [64, 16] into phi [64, 288]: per (token, i) the 16 products of
// x_i, per token the constant, linear and padding features.
template <class E>
__device__ __forceinline__ void build_features(SmemTile<E> phi, SmemTile<E> x) {
  for (int item = threadIdx.x; item < kTokens * (kD + 1); item += kThreadsTaylor) {
    const int t = item / (kD + 1), i = item % (kD + 1);
    float row[kD];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const uint4 packed = *reinterpret_cast<const uint4*>(x.at(t, 8 * half));
      const E* values = reinterpret_cast<const E*>(&packed);
#pragma unroll
      for (int j = 0; j < 8; ++j) row[8 * half + j] = to_float(values[j]);
    }
    if (i < kD) {
      const float xi = row[i] * 0.17677669529663687f;  // 1 / (4 √2)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float out[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) out[j] = xi * row[8 * half + j];
        store8(phi.at(t, kD * i + 8 * half), out);
      }
    } else {
      float out[32];
      out[0] = 1.f;
#pragma unroll
      for (int j = 0; j < kD; ++j) out[1 + j] = 0.5f * row[j];
#pragma unroll
      for (int j = kD + 1; j < 32; ++j) out[j] = 0.f;
#pragma unroll
      for (int piece = 0; piece < 4; ++piece) {
        float part[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) part[j] = out[8 * piece + j];
        store8(phi.at(t, kConstantFeature + 8 * piece), part);
      }
    }
  }
}

// Issues the copies of chunk [start, start + len) of q, k [64, 16] and v [64, 64] into the tiles
// (rows past the end zero). v's columns 64..79 (the ones column and zeros) are set elsewhere.
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
  SmemTile<E> q_tiles[2], k_tiles[2], v_tiles[2];
  for (int buffer = 0; buffer < 2; ++buffer) {
    q_tiles[buffer] = {reinterpret_cast<E*>(carve(S::q_bytes)), S::q_ld};
    k_tiles[buffer] = {reinterpret_cast<E*>(carve(S::q_bytes)), S::q_ld};
    v_tiles[buffer] = {reinterpret_cast<E*>(carve(S::v_bytes)), S::v_ld};
  }
  SmemTile<E> phi{reinterpret_cast<E*>(carve(S::phi_bytes)), S::phi_ld};
  SmemTile<E> state_tile{reinterpret_cast<E*>(carve(S::s_bytes)), S::s_ld};
  SmemTile<E> scores_hi{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  SmemTile<E> scores_lo{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  SmemTile<float> out{reinterpret_cast<float*>(carve(S::out_bytes)), S::out_ld};

  E* o = static_cast<E*>(p.o);
  const int64_t token0 = int64_t{b} * T;
  // 16-byte pieces of v when every row of the tile starts on 16 bytes.
  const bool vector_v = V % 8 == 0 && reinterpret_cast<uintptr_t>(p.v) % 16 == 0;
  // Columns 64..79 of both v buffers: the ones column (the normaliser's) and zeros.
  for (int i = threadIdx.x; i < 2 * kTokens * (kColumns - kValues); i += kThreadsTaylor) {
    const int buffer = i / (kTokens * (kColumns - kValues)), rest = i % (kTokens * (kColumns - kValues));
    const int t = rest / (kColumns - kValues), c = kValues + rest % (kColumns - kValues);
    *v_tiles[buffer].at(t, c) = from_float<E>(c == kValues ? 1.f : 0.f);
  }
  load_chunk(q_tiles[0], k_tiles[0], v_tiles[0], p, token0, h, v0, 0, min(kTokens, T), vector_v);
  commit_copies();

  // S rows 16 (warp + 8 i) .. of the 288 features, all 80 columns (column 64: z).
  float state[kTileSlots][kColumns / 8][4];
#pragma unroll
  for (int i = 0; i < kTileSlots; ++i) zero(state[i]);

  for (int start = 0, chunk = 0; start < T; start += kTokens, ++chunk) {
    const int len = min(kTokens, T - start);
    const SmemTile<E> q_tile = q_tiles[chunk % 2], k_tile = k_tiles[chunk % 2], v_tile = v_tiles[chunk % 2];
    __syncthreads();  // the previous chunk's readers of every tile are done
    if (start + kTokens < T) {  // the next chunk's tiles load while this one computes
      load_chunk(q_tiles[(chunk + 1) % 2], k_tiles[(chunk + 1) % 2], v_tiles[(chunk + 1) % 2], p, token0, h, v0,
                 start + kTokens, min(kTokens, T - start - kTokens), vector_v);
      commit_copies();
      wait_copies<1>();
    } else {
      wait_copies<0>();
    }
    if (len < kTokens) {  // padding rows carry no normaliser (φ(0) is not zero)
      for (int t = len + threadIdx.x; t < kTokens; t += kThreadsTaylor) *v_tile.at(t, kValues) = from_float<E>(0.f);
    }
    // The state at the chunk start, rounded once for the read-out (two parts measured 20% slower
    // for 1.1–1.4× less error, both within twice the reference's error in the dtype).
    for_each_state_element(warp, [&](int i, int j, int e, int row, int column) {
      *state_tile.at(row, column) = from_float<E>(state[i][j][e]);
    });
    __syncthreads();
    build_features(phi, q_tile);
    __syncthreads();

    // o (and the normaliser in column 64) for rows 16 rows..: the features of this warp's half.
    float acc[kColumns / 8][4];
    zero(acc);
    {
      constexpr int kHalfFeatures = kFeatures / 2;  // 144
      SmemTile<E> phi_half{phi.data + half * kHalfFeatures, phi.ld};
      SmemTile<E> state_half{state_tile.data + half * kHalfFeatures * state_tile.ld, state_tile.ld};
      warp_mma<E, kColumns / 8>(acc, phi_half, false, rows * 16, state_half, false, 0, kHalfFeatures);
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
    // o = numerator / (normaliser + eps), or the numerator alone; pairs of columns.
    for (int i = threadIdx.x; i < kTokens * kValues / 2; i += kThreadsTaylor) {
      const int t = i / (kValues / 2), c = (i % (kValues / 2)) * 2;
      if (t >= len || v0 + c >= V) continue;
      const float scale = p.normalize ? 1.f / (*out.at(t, kValues) + p.eps) : 1.f;
      const float2 value = *reinterpret_cast<const float2*>(out.at(t, c));
      E* dst = o + ((token0 + start + t) * H + h) * V + v0 + c;
      if (vector_v) {  // V even: the pair is inside the row and 4-byte aligned
        E pair[2] = {from_float<E>(value.x * scale), from_float<E>(value.y * scale)};
        *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<const uint32_t*>(pair);
      } else {
        dst[0] = from_float<E>(value.x * scale);
        if (v0 + c + 1 < V) dst[1] = from_float<E>(value.y * scale);
      }
    }
  }
  // Final S [B, H, 273, V] and z [B, H, 273] (z from the first value tile).
  if (p.final_state != nullptr) {
    for_each_state_element(warp, [&](int i, int j, int e, int row, int c) {
      if (row >= kTaylorFeatures) return;
      const int64_t base = (int64_t{b} * H + h) * kTaylorFeatures + taylor_feature_index(row);
      if (c < kValues && v0 + c < V) p.final_state[base * V + v0 + c] = state[i][j][e];
      if (c == kValues && tile == 0 && p.final_normalizer != nullptr) p.final_normalizer[base] = state[i][j][e];
    });
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
