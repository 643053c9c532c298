// Asynchronous 16-byte copies global -> shared memory (cp.async, sm_80 and later), shared by the
// GSA and BASED kernels.
#pragma once

#include "ops/gsa/cuda/warp_mma.cuh"

namespace lintime::cuda {

// One 16-byte piece (zero-filled when !valid; src must still be a readable address). Visible to
// this thread after a wait (cp.async.wait_all / wait_group), to the CTA after a barrier too.
__device__ __forceinline__ void copy_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(detail::smem_address(dst)),
               "l"(src), "r"(valid ? 16 : 0));
}
// One 8-byte piece (cp.async.ca: the .cg form takes 16 bytes only); as copy_async_16.
__device__ __forceinline__ void copy_async_8(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(detail::smem_address(dst)),
               "l"(src), "r"(valid ? 8 : 0));
}
// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void wait_copies() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory"); }

}  // namespace lintime::cuda
