// Warpgroup products on Hopper's tensor cores (wgmma, sm_90a) for the GSA state kernels: the 4
// warps of a CTA compute a 64-row product together, both operands read by the tensor cores from
// shared memory (no ldmatrix, no fragment registers). The accumulators have the layout of
// warp_mma's (warp w holds rows 16 w.. in the mma.m16n8 layout), so the code around a product is
// the same for both. Operands live in CoreTile layout: 8 x 8 blocks ("core matrices") of 16-bit
// elements, each 128 contiguous bytes, blocks row by row; a tile used with either index as the
// contraction index is then one of the two no-swizzle layouts wgmma reads (K-major or MN-major).
#pragma once

#include "ops/gsa/cuda/warp_mma.cuh"

#include <cstdint>
#include <type_traits>

namespace lintime::cuda {

// A [rows, cols] tile of 16-bit elements in core-matrix blocks (cols a multiple of 8).
template <class E>
struct CoreTile {
  using Element = E;
  static constexpr bool kCoreLayout = true;
  E* data;
  int blocks_per_row;  // cols / 8
  __device__ E* at(int row, int col) const {
    return data + ((row >> 3) * blocks_per_row + (col >> 3)) * 64 + (row & 7) * 8 + (col & 7);
  }
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LINTIME_WGMMA 1
#endif

namespace detail {

// Shared-memory matrix descriptor, no swizzle: start address, the byte distance between core
// matrices adjacent along the contraction index (leading) and along the row/column index (stride).
__device__ __forceinline__ uint64_t core_descriptor(const void* start, uint32_t leading_bytes,
                                                    uint32_t stride_bytes) {
  const uint64_t address = smem_address(start);
  return ((address & 0x3FFFF) >> 4) | (uint64_t{(leading_bytes >> 4) & 0x3FFF} << 16) |
         (uint64_t{(stride_bytes >> 4) & 0x3FFF} << 32);
}

template <int N> struct WarpgroupMma;

template <>
struct WarpgroupMma<32> {
  template <class E, bool kTransA, bool kTransB>
  __device__ __forceinline__ static void run(float (&acc)[4][4], uint64_t desc_a, uint64_t desc_b) {
    if constexpr (std::is_same_v<E, __nv_bfloat16>) {
      asm volatile(
          "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
          "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %18, %19;\n}\n"
          : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3])
          : "l"(desc_a), "l"(desc_b), "n"(int(kTransA)), "n"(int(kTransB)));
    } else if constexpr (std::is_same_v<E, __half>) {
      asm volatile(
          "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
          "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %18, %19;\n}\n"
          : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3])
          : "l"(desc_a), "l"(desc_b), "n"(int(kTransA)), "n"(int(kTransB)));
    }
  }
};

template <>
struct WarpgroupMma<64> {
  template <class E, bool kTransA, bool kTransB>
  __device__ __forceinline__ static void run(float (&acc)[8][4], uint64_t desc_a, uint64_t desc_b) {
    if constexpr (std::is_same_v<E, __nv_bfloat16>) {
      asm volatile(
          "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
          "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %34, %35;\n}\n"
          : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3])
          : "l"(desc_a), "l"(desc_b), "n"(int(kTransA)), "n"(int(kTransB)));
    } else if constexpr (std::is_same_v<E, __half>) {
      asm volatile(
          "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
          "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %34, %35;\n}\n"
          : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3])
          : "l"(desc_a), "l"(desc_b), "n"(int(kTransA)), "n"(int(kTransB)));
    }
  }
};

template <>
struct WarpgroupMma<128> {
  template <class E, bool kTransA, bool kTransB>
  __device__ __forceinline__ static void run(float (&acc)[16][4], uint64_t desc_a, uint64_t desc_b) {
    if constexpr (std::is_same_v<E, __nv_bfloat16>) {
      asm volatile(
          "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
          "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %66, %67;\n}\n"
          : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3]), "+f"(acc[8][0]), "+f"(acc[8][1]), "+f"(acc[8][2]), "+f"(acc[8][3]), "+f"(acc[9][0]), "+f"(acc[9][1]), "+f"(acc[9][2]), "+f"(acc[9][3]), "+f"(acc[10][0]), "+f"(acc[10][1]), "+f"(acc[10][2]), "+f"(acc[10][3]), "+f"(acc[11][0]), "+f"(acc[11][1]), "+f"(acc[11][2]), "+f"(acc[11][3]), "+f"(acc[12][0]), "+f"(acc[12][1]), "+f"(acc[12][2]), "+f"(acc[12][3]), "+f"(acc[13][0]), "+f"(acc[13][1]), "+f"(acc[13][2]), "+f"(acc[13][3]), "+f"(acc[14][0]), "+f"(acc[14][1]), "+f"(acc[14][2]), "+f"(acc[14][3]), "+f"(acc[15][0]), "+f"(acc[15][1]), "+f"(acc[15][2]), "+f"(acc[15][3])
          : "l"(desc_a), "l"(desc_b), "n"(int(kTransA)), "n"(int(kTransB)));
    } else if constexpr (std::is_same_v<E, __half>) {
      asm volatile(
          "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
          "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
          "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %66, %67;\n}\n"
          : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3]), "+f"(acc[8][0]), "+f"(acc[8][1]), "+f"(acc[8][2]), "+f"(acc[8][3]), "+f"(acc[9][0]), "+f"(acc[9][1]), "+f"(acc[9][2]), "+f"(acc[9][3]), "+f"(acc[10][0]), "+f"(acc[10][1]), "+f"(acc[10][2]), "+f"(acc[10][3]), "+f"(acc[11][0]), "+f"(acc[11][1]), "+f"(acc[11][2]), "+f"(acc[11][3]), "+f"(acc[12][0]), "+f"(acc[12][1]), "+f"(acc[12][2]), "+f"(acc[12][3]), "+f"(acc[13][0]), "+f"(acc[13][1]), "+f"(acc[13][2]), "+f"(acc[13][3]), "+f"(acc[14][0]), "+f"(acc[14][1]), "+f"(acc[14][2]), "+f"(acc[14][3]), "+f"(acc[15][0]), "+f"(acc[15][1]), "+f"(acc[15][2]), "+f"(acc[15][3])
          : "l"(desc_a), "l"(desc_b), "n"(int(kTransA)), "n"(int(kTransB)));
    }
  }
};

}  // namespace detail

// Orders this thread's earlier writes to shared memory (ordinary stores, cp.async) before the
// tensor cores' reads of the next products; a barrier must follow before other threads' products.
__device__ __forceinline__ void fence_for_tensor_cores() {
#if defined(LINTIME_WGMMA)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Products are issued asynchronously between warpgroup_fence() and warpgroup_wait(): the 4 warps
// of the CTA issue them together and may read their accumulators only after the wait.
__device__ __forceinline__ void warpgroup_fence() {
#if defined(LINTIME_WGMMA)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void warpgroup_wait() {
#if defined(LINTIME_WGMMA)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}
// After warpgroup_wait: the accumulators count as written here, so that the compiler reads them
// only after the wait.
template <int NT>
__device__ __forceinline__ void hold_registers(float (&acc)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    asm volatile("" : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])::"memory");
  }
}

// Issues acc[64 x 8 NT] += A · B over kdim (a multiple of 16), by the 4 warps of the CTA together;
// each warp gets its 16 rows in warp_mma's layout. kTransA: `a` holds A stored [k][m] (else
// [m][k]); kTransB: `b` holds B stored [k][n] (else [n][k]). A's rows are the tile's 64 rows
// (columns when kTransA); B's columns start at n0.
template <class E, int NT, bool kTransA, bool kTransB>
__device__ __forceinline__ void warpgroup_mma_issue(float (&acc)[NT][4], CoreTile<E> a, CoreTile<E> b, int n0,
                                                    int kdim) {
#if defined(LINTIME_WGMMA)
  static_assert(sizeof(E) == 2, "wgmma products take 16-bit operands");
  constexpr uint32_t kBlock = 128;  // bytes of a core matrix
  // K-major operand (contraction along the tile's columns): leading = next column block, stride =
  // next row block; MN-major (contraction along the rows): the other way round.
  const uint32_t a_row_bytes = a.blocks_per_row * kBlock, b_row_bytes = b.blocks_per_row * kBlock;
#pragma unroll
  for (int k0 = 0; k0 < kdim; k0 += 16) {
    const uint64_t desc_a = kTransA ? detail::core_descriptor(a.at(k0, 0), a_row_bytes, kBlock)
                                    : detail::core_descriptor(a.at(0, k0), kBlock, a_row_bytes);
    const uint64_t desc_b = kTransB ? detail::core_descriptor(b.at(k0, n0), b_row_bytes, kBlock)
                                    : detail::core_descriptor(b.at(n0, k0), kBlock, b_row_bytes);
    detail::WarpgroupMma<8 * NT>::template run<E, kTransA, kTransB>(acc, desc_a, desc_b);
  }
#else
  __trap();  // launched only on sm_90a (the launcher checks)
#endif
}

}  // namespace lintime::cuda
