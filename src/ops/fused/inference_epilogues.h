// Fused inference epilogues: the elementwise and row-norm steps around a decode step's matrix
// products, one kernel each on a GPU where the ATen ops they replace run several (a decode step
// of a 24-layer GSA model ran ~26 kernels per layer, most of them these; H100 profile in
// dev/generation/README.md). Each function computes exactly its reference's formula, rounding
// each output as the unfused ATen ops round theirs; the references are the ATen compositions
// below, which also serve CPU tensors, fp64, and calls that record a gradient (the fused
// kernels have no backward). The SwiGLU product, which training runs in every MLP, has an
// autograd function of its own instead: the forward above (fused on a GPU), a backward from
// the saved gate and up.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <utility>

namespace lintime::ops {

// Whether the fused kernels can run at all: a CUDA build, and LINTIME_UNFUSED in the environment
// does not list "epilogues" (core/fused_paths.h; listing it keeps the unfused paths, to compare).
bool fused_epilogues_enabled();

// silu(gate) · up in fp32 (fp64 for fp64), rounded once to gate's dtype. gate, up [..., I]
// (column views of one product are fine: the last dim must be contiguous). When a gradient is
// recorded, the graph keeps gate and up alone, in their own dtype (autograd through the
// reference keeps three fp32 copies), and the backward is swiglu_product_bwd. The reference
// is the ATen composition; autograd through it is the backward's reference.
at::Tensor swiglu_product(const at::Tensor& gate, const at::Tensor& up);
at::Tensor swiglu_product_reference(const at::Tensor& gate, const at::Tensor& up);

// (d gate, d up) = (dout · up · silu'(gate), dout · silu(gate)), silu'(x) = σ(x)(1 + x(1 − σ(x))),
// in fp32 (fp64 for fp64), each rounded once to its input's dtype. On a GPU one fused kernel
// (16-bit or fp32 tensors whose rows have one stride); otherwise ATen ops in slices of rows,
// so that their fp32 temporaries are a slice's size, not the call's (the kernel's reference).
// gate, up, grad_out [..., I].
std::pair<at::Tensor, at::Tensor> swiglu_product_bwd(const at::Tensor& gate, const at::Tensor& up,
                                                     const at::Tensor& grad_out);

// The same, and with with_product also silu(gate) · up rounded once (as swiglu_product), which
// the kernel writes in the same pass: swiglu_linear's backward reads it instead of keeping it.
struct SwigluBackward {
  at::Tensor grad_gate, grad_up, product;  // product undefined without with_product
};
SwigluBackward swiglu_product_bwd_with_product(const at::Tensor& gate, const at::Tensor& up,
                                               const at::Tensor& grad_out, bool with_product);

// linear(silu(gate) · up, weight, bias): an MLP's product and down projection. When a gradient is
// recorded, the graph keeps gate and up alone, not the product (fla's swiglu_linear does the
// same); the backward forms the product again in the SwiGLU backward's pass. The reference is
// the ATen composition; autograd through it is the backward's reference.
at::Tensor swiglu_linear(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias);
at::Tensor swiglu_linear_reference(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias);

// (y, RMSNorm(y)) for y = x + residual: y rounded to the dtype as at::add does, the norm
// y · rsqrt(mean(y²) + eps) · weight in fp32 over the last dim, rounded once.
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                               const std::optional<at::Tensor>& weight, double eps);
std::pair<at::Tensor, at::Tensor> add_rms_norm_reference(const at::Tensor& x, const at::Tensor& residual,
                                                         const std::optional<at::Tensor>& weight, double eps);

// RMSNorm(silu(x)) with silu's output rounded to the dtype first (as at::silu does).
at::Tensor silu_rms_norm(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps);
at::Tensor silu_rms_norm_reference(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps);

// GSA's activations from its projections q, k, v [..., Wq], [..., Wk], [..., Wv] and f [..., Wf]:
// swish(q), swish(k), swish(v), and g = log_sigmoid(f) / normalizer, s = 1 − exp(g) (each ATen
// step's rounding kept); all five contiguous. On a GPU one kernel writes them.
struct GsaActivations {
  at::Tensor q, k, v, s, g;
};
GsaActivations gsa_activations(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& f,
                               double gate_logit_normalizer);
GsaActivations gsa_activations_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const at::Tensor& f, double gate_logit_normalizer);

}  // namespace lintime::ops
