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
  float* lse = nullptr;         // [B, H, T] or null: log2 of each row's softmax normaliser over
                                // the scores in log2 units (for the backward)
};

cudaError_t sliding_window_forward(const SlidingWindowParams& params, cudaStream_t stream);

// The backward (sliding_window_backward.cu), FlashAttention's algorithm restricted to the band:
// P is recomputed from q, k and the forward's lse; one kernel per 64-query block forms
// δ_t = do_t·o_t (kept in a [B, H, T] workspace), dS = P ⊙ (dP − δ) with dP = do vᵀ, and
// dq = scale · dS k over the key blocks its window reaches; a second per 64-key block forms
// dv = Pᵀ do and dk = scale · dSᵀ q over the query blocks that see it. P and dS are rounded to the
// input dtype for their products (as FlashAttention does), fp32 accumulation.
struct SlidingWindowBackwardParams {
  int batch = 0, seqlen = 0, heads = 0, window = 1;
  float scale = 1.f;
  bool half_precision = false;
  const void* q = nullptr;     // [B, T, H, 64]
  const void* k = nullptr;
  const void* v = nullptr;
  const void* o = nullptr;     // the forward's output
  const void* dout = nullptr;  // [B, T, H, 64]
  const float* lse = nullptr;  // [B, H, T], from the forward
  float* delta = nullptr;      // workspace [B, H, T]
  void* dq = nullptr;          // [B, T, H, 64]
  void* dk = nullptr;
  void* dv = nullptr;
};

cudaError_t sliding_window_backward(const SlidingWindowBackwardParams& params, cudaStream_t stream);

}  // namespace lintime::cuda
