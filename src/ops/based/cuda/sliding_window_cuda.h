// The torch-free interface of lintime's fused sliding-window attention forward (BASED's local
// mixer, docs based.md §2): flash-attention style, one CTA of 4 warps per (64-query block, head,
// sequence) walks the key blocks its window reaches with an online softmax (fp32 row max and
// sum), scores and P·V on tensor cores (mma.sync, fp32 accumulation, P rounded to the input
// dtype as FlashAttention does). window w = keys a query sees, itself included. bf16/fp16,
// head dims 64 (q, k and v); [B, T, H, 64] contiguous; no varlen. Filled by the binding
// (ops/register/sliding_window_registration.cpp).
#pragma once

#include <cuda_runtime_api.h>

namespace lintime::cuda {

constexpr int kWindowHeadDim = 64;

struct SlidingWindowParams {
  int batch = 0, seqlen = 0, heads = 0, window = 1;
  float scale = 1.f;
  bool half_precision = false;  // fp16 (else bf16)
  const void* q = nullptr;      // [B, T, H, 64]
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;            // [B, T, H, 64]
};

cudaError_t sliding_window_forward(const SlidingWindowParams& params, cudaStream_t stream);

}  // namespace lintime::cuda
