// Fused sliding-window attention backward (see sliding_window_cuda.h). Both kernels use the
// forward's layout: one CTA of 4 warps per 64-row block, each warp 16 rows, 64-wide tiles in
// shared memory loaded by cp.async, products on tensor cores with fp32 accumulation.
#include "ops/based/cuda/sliding_window_cuda.h"
#include "ops/based/cuda/sliding_window_tiles.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace lintime::cuda {
namespace {

using namespace window;
constexpr float kLog2e = 1.4426950408889634f;

// 64 floats of a [B, H, T] row from position `first` (zero outside [0, T)).
__device__ __forceinline__ void load_row_floats(float* dst, const float* row, int first, int seqlen) {
  for (int i = threadIdx.x; i < kBlock; i += kThreads) {
    const int t = first + i;
    dst[i] = t >= 0 && t < seqlen ? row[t] : 0.f;
  }
}

// Stores a warp's 16 × 64 accumulator slab (rows first + 16 warp ..) times `scale` into a
// [B, T, H, 64] tensor, rows inside [0, T) only.
template <class E>
__device__ __forceinline__ void store_rows(void* base, const float (&acc)[kD / 8][4], float scale, int heads, int h,
                                           int64_t token0, int first, int seqlen) {
  E* dst = static_cast<E*>(base);
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int j = 0; j < kD / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int t = first + warp * 16 + acc_row(e);
      if (t >= seqlen) continue;
      const E pair[2] = {from_float<E>(acc[j][e] * scale), from_float<E>(acc[j][e + 1] * scale)};
      *reinterpret_cast<uint32_t*>(dst + ((token0 + t) * heads + h) * kD + acc_col(j, e)) =
          *reinterpret_cast<const uint32_t*>(pair);
    }
  }
}

__device__ __forceinline__ bool visible(int t, int key, int window, int seqlen) {
  return key <= t && key > t - window && t < seqlen;
}

// dq for the 64 queries of a block: δ_t = do_t·o_t, then over the key blocks of its window
// P = 2^(s·scale·log2 e − lse), dP = do vᵀ, dS = P ⊙ (dP − δ), dq += dS k; dq ×= scale.
template <class E>
__global__ void __launch_bounds__(kThreads) window_backward_queries_kernel(SlidingWindowBackwardParams p) {
  const int block = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int T = p.seqlen, H = p.heads, w = p.window;
  const int q0 = block * kBlock;
  const int64_t token0 = int64_t{b} * T;
  const float* lse_row = p.lse + (int64_t{b} * H + h) * T;
  constexpr int ld = kD + kPad<E>;
  __shared__ __align__(16) E q_smem[kBlock * ld], do_smem[kBlock * ld], o_smem[kBlock * ld];
  __shared__ __align__(16) E k_smem[kBlock * ld], v_smem[kBlock * ld];
  __shared__ float lse[kBlock], delta[kBlock];
  const SmemTile<E> q_tile{q_smem, ld}, do_tile{do_smem, ld}, o_tile{o_smem, ld}, k_tile{k_smem, ld},
      v_tile{v_smem, ld};
  const SmemTile<E> ds_tile = o_tile;  // o is needed only for δ
  load_rows(q_tile, p.q, H, h, token0, q0, T);
  load_rows(do_tile, p.dout, H, h, token0, q0, T);
  load_rows(o_tile, p.o, H, h, token0, q0, T);
  load_row_floats(lse, lse_row, q0, T);
  asm volatile("cp.async.wait_all;\n" ::: "memory");
  __syncthreads();
  {  // δ: two threads per row, 32 columns each
    const int r = threadIdx.x / 2, half = threadIdx.x % 2;
    float sum = 0.f;
#pragma unroll
    for (int piece = 0; piece < 4; ++piece) {
      const uint4 d_packed = *reinterpret_cast<const uint4*>(do_tile.at(r, 32 * half + 8 * piece));
      const uint4 o_packed = *reinterpret_cast<const uint4*>(o_tile.at(r, 32 * half + 8 * piece));
      const E* d_values = reinterpret_cast<const E*>(&d_packed);
      const E* o_values = reinterpret_cast<const E*>(&o_packed);
#pragma unroll
      for (int c = 0; c < 8; ++c) sum += to_float(d_values[c]) * to_float(o_values[c]);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    if (half == 0) {
      delta[r] = sum;
      if (q0 + r < T) p.delta[(int64_t{b} * H + h) * T + q0 + r] = sum;
    }
  }

  float dq[kD / 8][4];
  zero(dq);
  const float log2e_scale = p.scale * kLog2e;
  const int first_key = max(0, q0 - w + 1), last_key = min(T - 1, q0 + kBlock - 1);
  for (int k0 = first_key / kBlock * kBlock; k0 <= last_key; k0 += kBlock) {
    __syncthreads();  // δ written (o no longer read); the previous block's readers of k, v, dS done
    load_rows(k_tile, p.k, H, h, token0, k0, T);
    load_rows(v_tile, p.v, H, h, token0, k0, T);
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    __syncthreads();
    float s[kBlock / 8][4], dp[kBlock / 8][4];
    zero(s);
    zero(dp);
    warp_mma<E, kBlock / 8>(s, q_tile, false, warp * 16, k_tile, true, 0, kD);
    warp_mma<E, kBlock / 8>(dp, do_tile, false, warp * 16, v_tile, true, 0, kD);
#pragma unroll
    for (int j = 0; j < kBlock / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const int r = warp * 16 + acc_row(e), t = q0 + r;
        float ds[2];
#pragma unroll
        for (int d = 0; d < 2; ++d) {
          const int key = k0 + acc_col(j, e) + d;
          const float prob = visible(t, key, w, T) ? exp2f(s[j][e + d] * log2e_scale - lse[r]) : 0.f;
          ds[d] = prob * (dp[j][e + d] - delta[r]);
        }
        const E pair[2] = {from_float<E>(ds[0]), from_float<E>(ds[1])};
        *reinterpret_cast<uint32_t*>(ds_tile.at(r, acc_col(j, e))) = *reinterpret_cast<const uint32_t*>(pair);
      }
    }
    __syncwarp();  // the warp's dS rows are written (each warp reads only its own rows)
    warp_mma<E, kD / 8>(dq, ds_tile, false, warp * 16, k_tile, false, 0, kBlock);
  }
  store_rows<E>(p.dq, dq, p.scale, H, h, token0, q0, T);
}

// dk, dv for the 64 keys of a block over the query blocks that see them (queries
// [k0, k0 + 63 + w − 1]): Pᵀ, dv += Pᵀ do, dPᵀ = v doᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − δ), dk += dSᵀ q;
// dk ×= scale.
template <class E>
__global__ void __launch_bounds__(kThreads) window_backward_keys_kernel(SlidingWindowBackwardParams p) {
  const int block = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int T = p.seqlen, H = p.heads, w = p.window;
  const int k0 = block * kBlock;
  const int64_t token0 = int64_t{b} * T;
  const float* lse_row = p.lse + (int64_t{b} * H + h) * T;
  const float* delta_row = p.delta + (int64_t{b} * H + h) * T;
  constexpr int ld = kD + kPad<E>;
  __shared__ __align__(16) E k_smem[kBlock * ld], v_smem[kBlock * ld], q_smem[kBlock * ld], do_smem[kBlock * ld];
  __shared__ __align__(16) E p_smem[kBlock * ld];  // Pᵀ, then dSᵀ, of the warp's rows
  __shared__ float lse[kBlock], delta[kBlock];
  const SmemTile<E> k_tile{k_smem, ld}, v_tile{v_smem, ld}, q_tile{q_smem, ld}, do_tile{do_smem, ld};
  const SmemTile<E> p_tile{p_smem, ld};
  load_rows(k_tile, p.k, H, h, token0, k0, T);
  load_rows(v_tile, p.v, H, h, token0, k0, T);

  float dk[kD / 8][4], dv[kD / 8][4];
  zero(dk);
  zero(dv);
  const float log2e_scale = p.scale * kLog2e;
  const long last_query_long = static_cast<long>(k0) + kBlock - 1 + w - 1;
  const int last_query = static_cast<int>(last_query_long < T - 1 ? last_query_long : T - 1);
  for (int q0 = k0; q0 <= last_query; q0 += kBlock) {
    __syncthreads();  // the previous block's readers of q, do, lse, δ are done
    load_rows(q_tile, p.q, H, h, token0, q0, T);
    load_rows(do_tile, p.dout, H, h, token0, q0, T);
    load_row_floats(lse, lse_row, q0, T);
    load_row_floats(delta, delta_row, q0, T);
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    __syncthreads();
    float st[kBlock / 8][4], dpt[kBlock / 8][4];
    zero(st);
    zero(dpt);
    warp_mma<E, kBlock / 8>(st, k_tile, false, warp * 16, q_tile, true, 0, kD);
    warp_mma<E, kBlock / 8>(dpt, v_tile, false, warp * 16, do_tile, true, 0, kD);
    // Pᵀ (rows: this warp's keys; columns: the block's queries), rounded for dv.
#pragma unroll
    for (int j = 0; j < kBlock / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const int r = warp * 16 + acc_row(e), key = k0 + r;
#pragma unroll
        for (int d = 0; d < 2; ++d) {
          const int c = acc_col(j, e) + d, t = q0 + c;
          st[j][e + d] = visible(t, key, w, T) ? exp2f(st[j][e + d] * log2e_scale - lse[c]) : 0.f;
        }
        const E pair[2] = {from_float<E>(st[j][e]), from_float<E>(st[j][e + 1])};
        *reinterpret_cast<uint32_t*>(p_tile.at(r, acc_col(j, e))) = *reinterpret_cast<const uint32_t*>(pair);
      }
    }
    __syncwarp();
    warp_mma<E, kD / 8>(dv, p_tile, false, warp * 16, do_tile, false, 0, kBlock);
    __syncwarp();  // Pᵀ read: its rows take dSᵀ
#pragma unroll
    for (int j = 0; j < kBlock / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const int r = warp * 16 + acc_row(e), c = acc_col(j, e);
        const float ds0 = st[j][e] * (dpt[j][e] - delta[c]), ds1 = st[j][e + 1] * (dpt[j][e + 1] - delta[c + 1]);
        const E pair[2] = {from_float<E>(ds0), from_float<E>(ds1)};
        *reinterpret_cast<uint32_t*>(p_tile.at(r, c)) = *reinterpret_cast<const uint32_t*>(pair);
      }
    }
    __syncwarp();
    warp_mma<E, kD / 8>(dk, p_tile, false, warp * 16, q_tile, false, 0, kBlock);
  }
  store_rows<E>(p.dk, dk, p.scale, H, h, token0, k0, T);
  store_rows<E>(p.dv, dv, 1.f, H, h, token0, k0, T);
}

template <class E>
cudaError_t launch(const SlidingWindowBackwardParams& p, cudaStream_t stream) {
  const dim3 grid((p.seqlen + kBlock - 1) / kBlock, p.heads, p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  window_backward_queries_kernel<E><<<grid, kThreads, 0, stream>>>(p);
  window_backward_keys_kernel<E><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t sliding_window_backward(const SlidingWindowBackwardParams& params, cudaStream_t stream) {
  return params.half_precision ? launch<__half>(params, stream) : launch<__nv_bfloat16>(params, stream);
}

}  // namespace lintime::cuda
