// The torch-free interface of lintime's fused Taylor linear attention prefill (BASED, docs
// based.md §1, §5): a params struct of pointers and sizes, filled by the binding
// (ops/register/taylor_attention_registration.cpp) after its checks, and the launcher.
//
// One CTA of 8 warps per (64-column value tile, head, sequence), two CTAs per SM, walks the
// sequence in chunks of 64 tokens with the state S in registers. φ is BASED's feature map in its
// symmetric form: the products x_i x_j for i ≤ j only (x_i x_j and x_j x_i fold into one feature
// √2 the size), 1 + 16 + 136 = 153 features padded to 160 instead of 273 padded to 288, the same
// inner products with 0.56× the state and the products. Per chunk: φ(q) and φ(k) are built in
// shared memory (never in global memory), o = φ(q) S + A v with A_ts = 1 + s + s²/2,
// s = q_t·k_s / 4 (s ≤ t), then S += φ(k)ᵀ v. bf16/fp16 operands on tensor cores with fp32
// accumulation; S enters the read-out rounded once, A split in two 16-bit parts (16 significant
// bits). The normaliser φ(q)·z + Σ_s A_ts is formed in fp32 on the CUDA cores (z kept in shared
// memory, A's row sums from the unrounded scores). Final states are written in BASED's 273-feature
// order.
// Feature dim 16 only (BASED's d'); inputs [B, T, H, ·] contiguous; no varlen, no initial state.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lintime::cuda {

struct TaylorParams {
  int batch = 0, seqlen = 0, heads = 0, value_dim = 0;
  bool normalize = true;
  float eps = 1e-12f;
  bool half_precision = false;  // fp16 elements (else bf16)
  const void* q = nullptr;  // [B, T, H, 16]
  const void* k = nullptr;  // [B, T, H, 16]
  const void* v = nullptr;  // [B, T, H, V]
  void* o = nullptr;        // [B, T, H, V], the input dtype
  float* final_state = nullptr;       // [B, H, 273, V] or null
  float* final_normalizer = nullptr;  // [B, H, 273] or null
};

constexpr int kTaylorFeatureDim = 16;
constexpr int kTaylorFeatures = 1 + kTaylorFeatureDim + kTaylorFeatureDim * kTaylorFeatureDim;  // 273

// Shared memory the kernel asks for (the binding checks it against the device's limit).
size_t taylor_prefill_smem_bytes();
cudaError_t taylor_prefill(const TaylorParams& params, cudaStream_t stream);

// The backward of the prefill (taylor_backward.cu), for training: from q, k, v, the forward's o
// and the gradient do, the gradients dq, dk, dv. Two kernels, one CTA of 8 warps per (head,
// sequence) each (value dims up to 64 only):
// - queries: walks the chunks forward with S and z as the prefill does; per chunk it recomputes
//   the normaliser d_t, forms dn_t = do_t / d_t and dd_t = −(do_t·o_t) / d_t (kept for the second
//   kernel in [B, H, T_pad] workspaces), the intra-chunk dA = dn vᵀ + dd and dx = dA ⊙ (1 + s)
//   (s = q·k / 4), and dq = ∂φ(q)/∂q ᵀ (S dn + z dd) + dx k / 4;
// - keys: walks the chunks backward with dS = Σ_later φ(q) dnᵀ and dz = Σ_later φ(q) dd, and
//   forms dv = φ(k) dS + Aᵀ dn and dk = ∂φ(k)/∂k ᵀ (dS v + dz) + dxᵀ q / 4.
// Without the normalised read-out d = 1 and dd = 0.
struct TaylorBackwardParams {
  int batch = 0, seqlen = 0, heads = 0, value_dim = 0;
  bool normalize = true;
  float eps = 1e-12f;
  bool half_precision = false;
  const void* q = nullptr;     // [B, T, H, 16]
  const void* k = nullptr;     // [B, T, H, 16]
  const void* v = nullptr;     // [B, T, H, V]
  const void* o = nullptr;     // [B, T, H, V], the forward's output
  const void* dout = nullptr;  // [B, T, H, V]
  void* dq = nullptr;          // [B, T, H, 16]
  void* dk = nullptr;          // [B, T, H, 16]
  void* dv = nullptr;          // [B, T, H, V]
  int padded_seqlen = 0;                // taylor_padded_seqlen(seqlen)
  float* inverse_normalizer = nullptr;  // workspace [B, H, padded_seqlen]: 1 / d_t
  float* normalizer_grad = nullptr;     // workspace [B, H, padded_seqlen]: dd_t
};
constexpr int kTaylorBackwardMaxValueDim = 64;
// T rounded up to the chunk (the workspaces' last dimension).
inline int taylor_padded_seqlen(int seqlen) { return (seqlen + 63) / 64 * 64; }
size_t taylor_backward_smem_bytes();
cudaError_t taylor_backward(const TaylorBackwardParams& params, cudaStream_t stream);

// One decoding step in place (taylor_step.cu): per (sequence, head) one CTA reads S [273, V] and
// z once, adds φ(k) vᵀ and φ(k), writes them back and reads out o = φ(q)ᵀ S (/ (φ(q)·z + eps))
// from the updated rows on the way: the state's bytes are the whole traffic.
enum class TaylorElement { bfloat16, float16, float32 };
struct TaylorStepParams {
  int batch = 0, heads = 0, value_dim = 0;
  bool normalize = true;
  float eps = 1e-12f;
  TaylorElement element = TaylorElement::bfloat16;
  const void* q = nullptr;  // [B, H, 16]
  const void* k = nullptr;  // [B, H, 16]
  const void* v = nullptr;  // [B, H, V]
  void* o = nullptr;        // [B, H, V], the input dtype
  float* state = nullptr;       // [B, H, 273, V], updated in place
  float* normalizer = nullptr;  // [B, H, 273], updated in place
};
cudaError_t taylor_step(const TaylorStepParams& params, cudaStream_t stream);

}  // namespace lintime::cuda
