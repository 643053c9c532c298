// Fused inference epilogues (see the header): the ATen references, and the dispatch to the CUDA
// kernels (ops/fused/cuda) for CUDA tensors of bf16 / fp16 / fp32 when no gradient is recorded
// (LINTIME_UNFUSED=epilogues in the environment keeps the references, to compare). The SwiGLU
// product also has an autograd function of its own, for training: its forward is the same
// dispatch below autograd, it saves gate and up alone, and its backward is swiglu_product_bwd.
#include "ops/fused/inference_epilogues.h"

#include "core/fused_paths.h"
#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#ifdef LINTIME_WITH_CUDA
#include "ops/fused/cuda/epilogues_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <string_view>

namespace lintime::ops {
namespace {

at::ScalarType compute_type(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor rms_norm_of(const at::Tensor& y, const std::optional<at::Tensor>& weight, double eps) {
  const at::Tensor y32 = y.to(compute_type(y.scalar_type()));
  at::Tensor out = y32 * at::rsqrt(y32.square().mean(-1, /*keepdim=*/true) + eps);
  if (weight.has_value() && weight->defined()) out = out * weight->to(out.scalar_type());
  return out.to(y.scalar_type());
}

#ifdef LINTIME_WITH_CUDA
// Rows of a [..., C] tensor: the product of its leading sizes.
int64_t leading_rows(const at::Tensor& t) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return rows;
}

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

namespace {

// Elements per slice of swiglu_product_bwd's ATen form, whose compute-dtype temporaries (four
// or five at a time) are this size whatever the call's. CPU: 2^18 (1 MiB of fp32): of 2^16 to
// 2^20 and no slicing, about the fastest on bf16 [4096, 1408] (2 busy cores: 5.2-6.3 ms,
// unsliced 8.6-9.6 ms, autograd through the reference 5.0-11.9 ms), its peak 4 MB above the two
// gradients (unsliced 92 MB). CUDA: 2^24 (64 MiB of fp32); there the fused kernel takes every
// 16-bit and fp32 call, and this form serves fp64 and the LINTIME_UNFUSED comparison.
int64_t backward_slice_elements(const at::Device& device) {
  return device.is_cpu() ? int64_t{1} << 18 : int64_t{1} << 24;
}

// silu(gate) · up without autograd: the fused kernel where it takes the tensors, else the reference.
at::Tensor swiglu_product_fwd(const at::Tensor& gate, const at::Tensor& up) {
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

// Training: autograd through the reference would keep three fp32 [..., I] tensors per call
// (silu's input and output, up in fp32: 6× the bytes of bf16 gate and up); this function keeps
// gate and up as they are, and its backward recomputes silu from them.
class SwigluProductFunction : public torch::autograd::Function<SwigluProductFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    ctx->save_for_backward({gate, up});
    return swiglu_product_fwd(gate, up);  // grad mode is off here: the fused kernel takes CUDA tensors
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_gate, grad_up] = swiglu_product_bwd(saved[0], saved[1], grad_outputs[0]);
    return {grad_gate, grad_up};
  }
};

// The SwiGLU product and the down projection together: the graph keeps gate and up, not the
// product [..., I] the projection reads (2.75 hidden widths per token at fla's ratio), and the
// backward kernel writes the product again beside the gradients, for the weight's gradient.
class SwigluLinearFunction : public torch::autograd::Function<SwigluLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up,
                            const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
    ctx->save_for_backward({gate, up, weight});
    ctx->saved_data["bias"] = bias.has_value() && bias->defined();
    return at::linear(swiglu_product_fwd(gate, up), weight, bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &up = saved[1], &weight = saved[2];
    const int64_t inner = gate.size(-1), outer = weight.size(0);
    const at::Tensor grad_y = grad_outputs[0].reshape({-1, outer});  // [R, O]
    const at::Tensor grad_product = at::mm(grad_y, weight).view(gate.sizes());
    auto [grad_gate, grad_up, product] =
        swiglu_product_bwd_with_product(gate, up, grad_product, ctx->needs_input_grad(2));
    at::Tensor grad_weight, grad_bias;
    if (ctx->needs_input_grad(2)) grad_weight = at::mm(grad_y.t(), product.reshape({-1, inner}));
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(3)) grad_bias = grad_y.sum(0);
    return {grad_gate, grad_up, grad_weight, grad_bias};
  }
};

}  // namespace

at::Tensor swiglu_product(const at::Tensor& gate, const at::Tensor& up) {
  LINTIME_CHECK(gate.sizes() == up.sizes(), "swiglu_product: gate and up must have one shape, got ", gate.sizes(),
                " and ", up.sizes());
  if (at::GradMode::is_enabled() && (gate.requires_grad() || up.requires_grad())) {
    return SwigluProductFunction::apply(gate, up);
  }
  return swiglu_product_fwd(gate, up);
}

at::Tensor swiglu_linear(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias) {
  LINTIME_CHECK(gate.sizes() == up.sizes() && gate.dim() >= 1, "swiglu_linear: gate and up must have one shape, got ",
                gate.sizes(), " and ", up.sizes());
  LINTIME_CHECK(weight.dim() == 2 && weight.size(1) == gate.size(-1), "swiglu_linear: weight must be [out, ",
                gate.size(-1), "], got ", weight.sizes());
  const at::Tensor bias_or_undefined = bias.has_value() ? *bias : at::Tensor();
  bool records = false;
  for (const at::Tensor* t : {&gate, &up, &weight, &bias_or_undefined}) {
    records = records || (t->defined() && t->requires_grad());
  }
  if (at::GradMode::is_enabled() && records) return SwigluLinearFunction::apply(gate, up, weight, bias);
  return at::linear(swiglu_product_fwd(gate, up), weight, bias);
}

at::Tensor swiglu_linear_reference(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  return at::linear(swiglu_product_reference(gate, up), weight, bias);
}

std::pair<at::Tensor, at::Tensor> swiglu_product_bwd(const at::Tensor& gate, const at::Tensor& up,
                                                     const at::Tensor& grad_out) {
  auto result = swiglu_product_bwd_with_product(gate, up, grad_out, /*with_product=*/false);
  return {result.grad_gate, result.grad_up};
}

SwigluBackward swiglu_product_bwd_with_product(const at::Tensor& gate, const at::Tensor& up,
                                               const at::Tensor& grad_out, bool with_product) {
  LINTIME_CHECK(gate.sizes() == up.sizes() && grad_out.sizes() == gate.sizes(),
                "swiglu_product_bwd: gate, up and grad_out must have one shape, got ", gate.sizes(), ", ", up.sizes(),
                " and ", grad_out.sizes());
  const bool fp64 = gate.scalar_type() == at::kDouble || up.scalar_type() == at::kDouble;
  const at::ScalarType compute = fp64 ? at::kDouble : at::kFloat;
  at::Tensor grad_gate = at::empty(gate.sizes(), gate.options());
  at::Tensor grad_up = at::empty(up.sizes(), up.options());
  at::Tensor product = with_product ? at::empty(gate.sizes(), gate.options()) : at::Tensor();
  if (gate.numel() == 0) return {grad_gate, grad_up, product};
#ifdef LINTIME_WITH_CUDA
  if (gate.dim() >= 1 && fused_takes({&gate, &up, &grad_out})) {
    const c10::cuda::CUDAGuard guard(gate.device());
    cuda::SwigluBackwardParams params;
    params.element = *element_of(gate.scalar_type());
    params.columns = gate.size(-1);
    params.rows = leading_rows(gate);
    params.gate_row_stride = *row_stride(gate);
    params.up_row_stride = *row_stride(up);
    params.grad_out_row_stride = *row_stride(grad_out);
    params.gate = gate.data_ptr();
    params.up = up.data_ptr();
    params.grad_out = grad_out.data_ptr();
    params.grad_gate = grad_gate.data_ptr();
    params.grad_up = grad_up.data_ptr();
    params.product = with_product ? product.data_ptr() : nullptr;
    check_launch(cuda::swiglu_product_backward(params, c10::cuda::getCurrentCUDAStream()), "swiglu_product_bwd");
    return {grad_gate, grad_up, product};
  }
#endif
  const int64_t width = gate.dim() == 0 ? 1 : gate.size(-1);
  const at::Tensor gate_rows = gate.reshape({-1, width}), up_rows = up.reshape({-1, width});  // [R, I]
  const at::Tensor grad_out_rows = grad_out.reshape({-1, width});
  const at::Tensor grad_gate_rows = grad_gate.view({-1, width}), grad_up_rows = grad_up.view({-1, width});
  const int64_t rows = gate_rows.size(0);
  const int64_t slice = std::max<int64_t>(1, backward_slice_elements(gate.device()) / width);
  for (int64_t start = 0; start < rows; start += slice) {
    const int64_t count = std::min(slice, rows - start);
    // g and d alias gate and grad_out when those are in the compute dtype already: never written.
    const at::Tensor g = gate_rows.narrow(0, start, count).to(compute);
    const at::Tensor d = grad_out_rows.narrow(0, start, count).to(compute);
    grad_up_rows.narrow(0, start, count).copy_(at::silu(g).mul_(d));
    // silu_backward(dy, x) = dy · σ(x) · (1 + x · (1 − σ(x))), in the compute dtype
    const at::Tensor u = up_rows.narrow(0, start, count);
    grad_gate_rows.narrow(0, start, count).copy_(at::silu_backward(at::mul(d, u), g));
    if (with_product) {
      product.view({-1, width}).narrow(0, start, count).copy_(swiglu_product_reference(g, u).to(gate.scalar_type()));
    }
  }
  return {grad_gate, grad_up, product};
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
