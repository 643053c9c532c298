// Fused inference epilogues (see the header): the ATen references, and the dispatch to the CUDA
// kernels (ops/fused/cuda) for CUDA tensors of bf16 / fp16 / fp32 when no gradient is recorded
// (LINTIME_UNFUSED=epilogues in the environment keeps the references, to compare).
#include "ops/fused/inference_epilogues.h"

#include "core/fused_paths.h"
#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#ifdef LINTIME_WITH_CUDA
#include "ops/fused/cuda/epilogues_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstdlib>
#include <initializer_list>
#include <string_view>

namespace lintime::ops {
namespace {

at::ScalarType compute_type(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

// Rows of a [..., C] tensor: the product of its leading sizes.
int64_t leading_rows(const at::Tensor& t) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return rows;
}

at::Tensor rms_norm_of(const at::Tensor& y, const std::optional<at::Tensor>& weight, double eps) {
  const at::Tensor y32 = y.to(compute_type(y.scalar_type()));
  at::Tensor out = y32 * at::rsqrt(y32.square().mean(-1, /*keepdim=*/true) + eps);
  if (weight.has_value() && weight->defined()) out = out * weight->to(out.scalar_type());
  return out.to(y.scalar_type());
}

#ifdef LINTIME_WITH_CUDA
// The stride between consecutive rows (all dims but the last collapsed), if one stride serves
// them all and the last dim is contiguous.
std::optional<int64_t> row_stride(const at::Tensor& t) {
  if (t.dim() < 1 || (t.size(-1) > 1 && t.stride(-1) != 1)) return std::nullopt;
  if (t.dim() == 1) return t.size(-1);
  const int64_t stride = t.stride(-2);
  for (int64_t d = t.dim() - 3; d >= 0; --d) {
    if (t.size(d) > 1 && t.stride(d) != t.stride(d + 1) * t.size(d + 1)) return std::nullopt;
  }
  return stride;
}

std::optional<cuda::EpilogueElement> element_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return cuda::EpilogueElement::bfloat16;
    case at::kHalf: return cuda::EpilogueElement::float16;
    case at::kFloat: return cuda::EpilogueElement::float32;
    default: return std::nullopt;
  }
}

// Whether the fused kernels take these tensors: all on one CUDA device, one supported dtype,
// row-strided, no gradient recorded.
bool fused_takes(std::initializer_list<const at::Tensor*> tensors) {
  if (!fused_epilogues_enabled()) return false;
  const at::Tensor& first = **tensors.begin();
  if (!first.is_cuda() || !element_of(first.scalar_type())) return false;
  const bool recording = at::GradMode::is_enabled();
  for (const at::Tensor* t : tensors) {
    if (!t->is_cuda() || t->device() != first.device() || t->scalar_type() != first.scalar_type()) return false;
    if (recording && t->requires_grad()) return false;
    if (!row_stride(*t)) return false;
  }
  return true;
}

void check_launch(cudaError_t status, const char* what) {
  LINTIME_CHECK(status == cudaSuccess, what, ": the fused CUDA kernel failed: ", cudaGetErrorString(status));
}
#endif

}  // namespace

bool fused_epilogues_enabled() {
#ifdef LINTIME_WITH_CUDA
  static const bool enabled = fused_path_enabled(FusedPath::epilogues);
  return enabled;
#else
  return false;
#endif
}

at::Tensor swiglu_product_reference(const at::Tensor& gate, const at::Tensor& up) {
  const auto compute = compute_type(gate.scalar_type());
  return (at::silu(gate.to(compute)) * up.to(compute)).to(gate.scalar_type());
}

at::Tensor swiglu_product(const at::Tensor& gate, const at::Tensor& up) {
  LINTIME_CHECK(gate.sizes() == up.sizes(), "swiglu_product: gate and up must have one shape, got ", gate.sizes(),
                " and ", up.sizes());
#ifdef LINTIME_WITH_CUDA
  if (fused_takes({&gate, &up})) {
    const c10::cuda::CUDAGuard guard(gate.device());
    at::Tensor out = at::empty(gate.sizes(), gate.options());
    cuda::SwigluParams params;
    params.element = *element_of(gate.scalar_type());
    params.columns = gate.size(-1);
    params.rows = leading_rows(gate);
    params.gate_row_stride = *row_stride(gate);
    params.up_row_stride = *row_stride(up);
    params.gate = gate.data_ptr();
    params.up = up.data_ptr();
    params.out = out.data_ptr();
    check_launch(cuda::swiglu_product(params, c10::cuda::getCurrentCUDAStream()), "swiglu_product");
    return out;
  }
#endif
  return swiglu_product_reference(gate, up);
}

std::pair<at::Tensor, at::Tensor> add_rms_norm_reference(const at::Tensor& x, const at::Tensor& residual,
                                                         const std::optional<at::Tensor>& weight, double eps) {
  at::Tensor sum = x + residual;
  return {sum, rms_norm_of(sum, weight, eps)};
}

#ifdef LINTIME_WITH_CUDA
namespace {
// Fills the row-norm kernel's params shared by add_rms_norm and silu_rms_norm.
cuda::RowNormParams row_norm_params(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps,
                                    const at::Tensor& out) {
  cuda::RowNormParams params;
  params.element = *element_of(x.scalar_type());
  params.columns = x.size(-1);
  params.rows = leading_rows(x);
  params.x_row_stride = *row_stride(x);
  params.eps = static_cast<float>(eps);
  params.x = x.data_ptr();
  params.weight = weight.has_value() && weight->defined() ? weight->data_ptr() : nullptr;
  params.out = out.data_ptr();
  return params;
}

bool weight_fits(const at::Tensor& x, const std::optional<at::Tensor>& weight) {
  if (!weight.has_value() || !weight->defined()) return true;
  return weight->dim() == 1 && weight->size(0) == x.size(-1) && weight->is_contiguous() && weight->is_cuda() &&
         weight->device() == x.device() && weight->scalar_type() == x.scalar_type() &&
         !(at::GradMode::is_enabled() && weight->requires_grad());
}
}  // namespace
#endif

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& residual,
                                               const std::optional<at::Tensor>& weight, double eps) {
  LINTIME_CHECK(x.sizes() == residual.sizes(), "add_rms_norm: x and residual must have one shape, got ", x.sizes(),
                " and ", residual.sizes());
#ifdef LINTIME_WITH_CUDA
  if (x.dim() >= 1 && x.size(-1) > 0 && fused_takes({&x, &residual}) && weight_fits(x, weight)) {
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor sum = at::empty(x.sizes(), x.options()), out = at::empty(x.sizes(), x.options());
    cuda::RowNormParams params = row_norm_params(x, weight, eps, out);
    params.add = true;
    params.residual = residual.data_ptr();
    params.residual_row_stride = *row_stride(residual);
    params.sum = sum.data_ptr();
    check_launch(cuda::row_rms_norm(params, c10::cuda::getCurrentCUDAStream()), "add_rms_norm");
    return {sum, out};
  }
#endif
  return add_rms_norm_reference(x, residual, weight, eps);
}

at::Tensor silu_rms_norm_reference(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps) {
  return rms_norm_of(at::silu(x), weight, eps);
}

at::Tensor silu_rms_norm(const at::Tensor& x, const std::optional<at::Tensor>& weight, double eps) {
#ifdef LINTIME_WITH_CUDA
  if (x.dim() >= 1 && x.size(-1) > 0 && fused_takes({&x}) && weight_fits(x, weight)) {
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor out = at::empty(x.sizes(), x.options());
    cuda::RowNormParams params = row_norm_params(x, weight, eps, out);
    params.silu = true;
    check_launch(cuda::row_rms_norm(params, c10::cuda::getCurrentCUDAStream()), "silu_rms_norm");
    return out;
  }
#endif
  return silu_rms_norm_reference(x, weight, eps);
}

GsaActivations gsa_activations_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const at::Tensor& f, double gate_logit_normalizer) {
  GsaActivations out;
  out.q = at::silu(q);
  out.k = at::silu(k);
  out.v = at::silu(v);
  out.g = at::log_sigmoid(f) / gate_logit_normalizer;
  out.s = 1 - at::exp(out.g);
  return out;
}

GsaActivations gsa_activations(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& f,
                               double gate_logit_normalizer) {
#ifdef LINTIME_WITH_CUDA
  const bool same_rows = q.dim() >= 1 && k.dim() == q.dim() && v.dim() == q.dim() && f.dim() == q.dim() &&
                         q.sizes().slice(0, q.dim() - 1) == k.sizes().slice(0, k.dim() - 1) &&
                         q.sizes().slice(0, q.dim() - 1) == v.sizes().slice(0, v.dim() - 1) &&
                         q.sizes().slice(0, q.dim() - 1) == f.sizes().slice(0, f.dim() - 1);
  if (same_rows && fused_takes({&q, &k, &v, &f})) {
    const c10::cuda::CUDAGuard guard(q.device());
    GsaActivations out;
    out.q = at::empty(q.sizes(), q.options());
    out.k = at::empty(k.sizes(), k.options());
    out.v = at::empty(v.sizes(), v.options());
    out.s = at::empty(f.sizes(), f.options());
    out.g = at::empty(f.sizes(), f.options());
    cuda::GsaActivationParams params;
    params.element = *element_of(q.scalar_type());
    const at::Tensor* inputs[4] = {&q, &k, &v, &f};
    for (int i = 0; i < 4; ++i) {
      params.widths[i] = inputs[i]->size(-1);
      params.row_strides[i] = *row_stride(*inputs[i]);
      params.inputs[i] = inputs[i]->data_ptr();
    }
    params.rows = leading_rows(q);
    params.swished[0] = out.q.data_ptr();
    params.swished[1] = out.k.data_ptr();
    params.swished[2] = out.v.data_ptr();
    params.normalizer = static_cast<float>(gate_logit_normalizer);
    params.s = out.s.data_ptr();
    params.g = out.g.data_ptr();
    check_launch(cuda::gsa_activations(params, c10::cuda::getCurrentCUDAStream()), "gsa_activations");
    return out;
  }
#endif
  return gsa_activations_reference(q, k, v, f, gate_logit_normalizer);
}

}  // namespace lintime::ops
