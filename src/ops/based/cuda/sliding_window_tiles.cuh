// Pieces shared by the sliding-window attention kernels (forward and backward): the block sizes
// and the cp.async loads of 64-row tiles of [B, T, H, 64] tensors.
#pragma once

#include "ops/based/cuda/sliding_window_cuda.h"
#include "ops/gsa/cuda/async_copy.cuh"
#include "ops/gsa/cuda/warp_mma.cuh"

#include <cstdint>

namespace lintime::cuda::window {

constexpr int kThreads = 128;  // 4 warps, 16 rows each
constexpr int kBlock = 64;     // rows per CTA, keys (or queries) per step
constexpr int kD = kWindowHeadDim;

// Issues the copies of rows [first, first + 64) of a [B, T, H, 64] tensor into a tile (rows
// outside [0, T) zero); visible after a wait and a barrier.
template <class E>
__device__ __forceinline__ void load_rows(SmemTile<E> tile, const void* base, int heads, int h, int64_t token0,
                                          int first, int seqlen) {
  const E* src = static_cast<const E*>(base);
  for (int i = threadIdx.x; i < kBlock * kD / 8; i += kThreads) {
    const int r = i / (kD / 8), c = (i % (kD / 8)) * 8;
    const int t = first + r;
    const bool valid = t >= 0 && t < seqlen;
    copy_async_16(tile.at(r, c), src + ((token0 + (valid ? t : 0)) * heads + h) * kD + c, valid);
  }
}

}  // namespace lintime::cuda::window
