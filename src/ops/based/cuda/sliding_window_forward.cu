// Fused sliding-window attention forward (see sliding_window_cuda.h).
#include "ops/based/cuda/sliding_window_cuda.h"
#include "ops/based/cuda/sliding_window_tiles.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

namespace lintime::cuda {
namespace {

using namespace window;

// kWriteLse: the training forward also writes each row's log2-sum-exp. A compile-time choice: as a
// run-time branch it cost the inference forward 4.86–4.93 → 5.41–5.53 ms at B 128, T 8192, w 65
// (one call, the two libraries interleaved).
template <class E, bool kWriteLse>
__global__ void __launch_bounds__(kThreads) sliding_window_kernel(SlidingWindowParams p) {
  const int block = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int T = p.seqlen, H = p.heads, w = p.window;
  const int q0 = block * kBlock;
  const int64_t token0 = int64_t{b} * T;
  __shared__ __align__(16) E q_smem[kBlock * (kD + kPad<E>)];
  __shared__ __align__(16) E k_smem[kBlock * (kD + kPad<E>)];
  __shared__ __align__(16) E v_smem[kBlock * (kD + kPad<E>)];
  __shared__ __align__(16) E p_smem[kBlock * (kBlock + kPad<E>)];
  const SmemTile<E> q_tile{q_smem, kD + kPad<E>}, k_tile{k_smem, kD + kPad<E>}, v_tile{v_smem, kD + kPad<E>};
  const SmemTile<E> p_tile{p_smem, kBlock + kPad<E>};
  load_rows(q_tile, p.q, H, h, token0, q0, T);

  // Online softmax state of the warp's rows acc_row(0) and acc_row(2) (rows g and g + 8).
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  float acc[kD / 8][4];
  zero(acc);
  const float log2e_scale = p.scale * 1.4426950408889634f;
  const int first_key = max(0, q0 - w + 1), last_key = min(T - 1, q0 + kBlock - 1);
  for (int k0 = first_key / kBlock * kBlock; k0 <= last_key; k0 += kBlock) {
    __syncthreads();  // the previous block's readers of k, v are done
    load_rows(k_tile, p.k, H, h, token0, k0, T);
    load_rows(v_tile, p.v, H, h, token0, k0, T);
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    __syncthreads();
    float s[kBlock / 8][4];
    zero(s);
    warp_mma<E, kBlock / 8>(s, q_tile, false, warp * 16, k_tile, true, 0, kD);
    // Mask (keys j with t − w < j ≤ t, j < T), scale into log2 units, new row maxima.
    float block_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kBlock / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = q0 + warp * 16 + acc_row(e), key = k0 + acc_col(j, e);
        const bool visible = key <= t && key > t - w && key < T;
        s[j][e] = visible ? s[j][e] * log2e_scale : -INFINITY;
        block_max[e / 2] = fmaxf(block_max[e / 2], s[j][e]);
      }
    }
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      block_max[r] = fmaxf(block_max[r], __shfl_xor_sync(0xffffffffu, block_max[r], 1));
      block_max[r] = fmaxf(block_max[r], __shfl_xor_sync(0xffffffffu, block_max[r], 2));
      const float new_max = fmaxf(row_max[r], block_max[r]);
      // No visible key yet: nothing to rescale (avoids −inf − −inf).
      correction[r] = new_max == -INFINITY ? 1.f : exp2f(row_max[r] - new_max);
      row_max[r] = new_max;
      row_sum[r] *= correction[r];
    }
    float block_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < kBlock / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const int r = e / 2;
        const float p0 = row_max[r] == -INFINITY ? 0.f : exp2f(s[j][e] - row_max[r]);
        const float p1 = row_max[r] == -INFINITY ? 0.f : exp2f(s[j][e + 1] - row_max[r]);
        // Sum what P·V will use: P rounded to the element type.
        const E r0 = from_float<E>(p0), r1 = from_float<E>(p1);
        block_sum[r] += to_float(r0) + to_float(r1);
        E* dst = p_tile.at(warp * 16 + acc_row(e), acc_col(j, e));
        dst[0] = r0;
        dst[1] = r1;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      block_sum[r] += __shfl_xor_sync(0xffffffffu, block_sum[r], 1);
      block_sum[r] += __shfl_xor_sync(0xffffffffu, block_sum[r], 2);
      row_sum[r] += block_sum[r];
    }
#pragma unroll
    for (int j = 0; j < kD / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] *= correction[e / 2];
    }
    __syncwarp();  // the warp's P rows are written (each warp reads only its own rows)
    warp_mma<E, kD / 8>(acc, p_tile, false, warp * 16, v_tile, false, 0, kBlock);
  }
  E* o = static_cast<E*>(p.o);
  if (kWriteLse && (threadIdx.x & 3) == 0) {  // one lane per row of the quad
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t = q0 + warp * 16 + acc_row(2 * r);
      if (t < T) p.lse[(int64_t{b} * H + h) * T + t] = row_max[r] + log2f(row_sum[r]);
    }
  }
#pragma unroll
  for (int j = 0; j < kD / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int t = q0 + warp * 16 + acc_row(e);
      if (t >= T) continue;
      const float inverse = 1.f / row_sum[e / 2];
      E pair[2] = {from_float<E>(acc[j][e] * inverse), from_float<E>(acc[j][e + 1] * inverse)};
      *reinterpret_cast<uint32_t*>(o + ((token0 + t) * H + h) * kD + acc_col(j, e)) =
          *reinterpret_cast<const uint32_t*>(pair);
    }
  }
}

template <class E>
cudaError_t launch_window(const SlidingWindowParams& p, cudaStream_t stream) {
  const dim3 grid((p.seqlen + kBlock - 1) / kBlock, p.heads, p.batch);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  if (p.lse != nullptr) {
    sliding_window_kernel<E, true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    sliding_window_kernel<E, false><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t sliding_window_forward(const SlidingWindowParams& params, cudaStream_t stream) {
  return params.half_precision ? launch_window<__half>(params, stream) : launch_window<__nv_bfloat16>(params, stream);
}

}  // namespace lintime::cuda
