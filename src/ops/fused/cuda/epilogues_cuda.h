// The torch-free interface of the fused inference epilogues (ops/fused/inference_epilogues.h):
// params structs of pointers, sizes and row strides, filled by the binding after its checks.
// Elements are 16-bit (bf16 / fp16) or fp32; every kernel computes in fp32 and rounds each
// output the way the unfused ATen ops it replaces round theirs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lintime::cuda {

enum class EpilogueElement { bfloat16, float16, float32 };

// out[r, c] = silu(gate[r, c]) · up[r, c] (rounded once).
struct SwigluParams {
  EpilogueElement element = EpilogueElement::bfloat16;
  int64_t rows = 0, columns = 0;
  int64_t gate_row_stride = 0, up_row_stride = 0;  // elements; columns are contiguous
  const void* gate = nullptr;
  const void* up = nullptr;
  void* out = nullptr;  // [rows, columns] contiguous
};
cudaError_t swiglu_product(const SwigluParams& params, cudaStream_t stream);

// The SwiGLU product's backward (training): with σ = sigmoid(gate),
//   grad_up = grad_out · silu(gate),  grad_gate = (grad_out · up) · σ · (1 + gate · (1 − σ)),
// in fp32, each rounded once: one pass where ATen took a dozen kernels over fp32 copies.
struct SwigluBackwardParams {
  EpilogueElement element = EpilogueElement::bfloat16;
  int64_t rows = 0, columns = 0;
  int64_t gate_row_stride = 0, up_row_stride = 0, grad_out_row_stride = 0;  // elements
  const void* gate = nullptr;
  const void* up = nullptr;
  const void* grad_out = nullptr;
  void* grad_gate = nullptr;  // [rows, columns] contiguous
  void* grad_up = nullptr;    // [rows, columns] contiguous
  void* product = nullptr;    // optional: silu(gate) · up recomputed, [rows, columns] contiguous
};
cudaError_t swiglu_product_backward(const SwigluBackwardParams& params, cudaStream_t stream);

// Row-wise RMSNorm of y = x + residual (add = true; y rounded, and written to sum) or of
// y = silu(x) (silu = true; rounded), times weight (optional): out = y · rsqrt(mean(y²) + eps) · w.
struct RowNormParams {
  EpilogueElement element = EpilogueElement::bfloat16;
  int64_t rows = 0, columns = 0;
  int64_t x_row_stride = 0, residual_row_stride = 0;
  bool add = false, silu = false;
  float eps = 1e-6f;
  const void* x = nullptr;
  const void* residual = nullptr;  // when add
  const void* weight = nullptr;    // [columns] or null
  void* sum = nullptr;             // [rows, columns] contiguous, when add
  void* out = nullptr;             // [rows, columns] contiguous
};
cudaError_t row_rms_norm(const RowNormParams& params, cudaStream_t stream);

// GSA's activations from its four projections (row-strided views): swish(q), swish(k), swish(v)
// into three contiguous [rows, W] outputs, and from f: g = log_sigmoid(f) / normalizer,
// s = 1 − exp(g), each step rounded as ATen's ops round it.
struct GsaActivationParams {
  EpilogueElement element = EpilogueElement::bfloat16;
  int64_t rows = 0;
  int64_t widths[4] = {0, 0, 0, 0};       // q, k, v, f columns
  int64_t row_strides[4] = {0, 0, 0, 0};  // elements
  const void* inputs[4] = {nullptr, nullptr, nullptr, nullptr};
  void* swished[3] = {nullptr, nullptr, nullptr};  // q, k, v: [rows, W] contiguous
  float normalizer = 1.f;
  void* s = nullptr;  // [rows, Wf]
  void* g = nullptr;  // [rows, Wf]
};
cudaError_t gsa_activations(const GsaActivationParams& params, cudaStream_t stream);

}  // namespace lintime::cuda
