// RMSNorm in fp32 (fp64 for fp64 inputs); on a GPU through torch's fused rms_norm.
#include "layers/rms_norm.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include "ops/fused/inference_epilogues.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <initializer_list>
#include <optional>
#include <vector>

namespace lintime::layers {

RMSNorm::RMSNorm(int64_t hidden_size, double eps, bool elementwise_affine)
    : hidden_size_(hidden_size), eps_(eps) {
  LINTIME_CHECK(hidden_size > 0, "RMSNorm: hidden_size must be positive, got ", hidden_size);
  LINTIME_CHECK(eps >= 0.0, "RMSNorm: eps must be non-negative, got ", eps);
  if (elementwise_affine) {
    weight = new_parameter({hidden_size});
    init_constant(weight, 1.0);
    register_parameter("weight", weight);
  }
}

namespace {

// The norm of x with this weight (undefined: none) over its last dim.
at::Tensor rms_norm_with(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (x.is_cuda() && (!weight.defined() || weight.scalar_type() == x.scalar_type())) {
    // torch's fused kernel (fp32 statistics, one kernel instead of ~8 small ones; a decode step
    // of a 24-layer model runs 72 of these norms). The formula below is its reference.
    return at::rms_norm(x, {x.size(-1)}, weight.defined() ? std::optional<at::Tensor>(weight) : std::nullopt, eps);
  }
  const auto compute = compute_dtype(x.scalar_type());
  at::Tensor x32 = x.to(compute);
  at::Tensor y = x32 * at::rsqrt(x32.square().mean(-1, /*keepdim=*/true) + eps);
  if (weight.defined()) y = y * weight.to(compute);
  return y.to(x.scalar_type());
}

// rms_norm_with(silu(x), weight) in training, keeping x alone: silu's output (which silu's
// backward and the norm's would keep beside x: one [..., hidden] tensor per GSA layer) is
// formed again in the backward, which differentiates the same ops through autograd, so the
// gradients are those of the unfused form bit for bit.
class SiluNormFunction : public torch::autograd::Function<SiluNormFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const std::optional<at::Tensor>& weight, double eps) {
    ctx->save_for_backward({x, weight.has_value() ? *weight : at::Tensor()});
    ctx->saved_data["eps"] = eps;
    return rms_norm_with(at::silu(x), weight.has_value() ? *weight : at::Tensor(), eps);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor x = saved[0].detach().requires_grad_(true);
    const bool has_weight = saved[1].defined();
    const at::Tensor weight = has_weight ? saved[1].detach().requires_grad_(ctx->needs_input_grad(1)) : at::Tensor();
    at::Tensor out;
    {
      at::AutoGradMode recording(true);
      out = rms_norm_with(at::silu(x), weight, ctx->saved_data["eps"].toDouble());
    }
    std::vector<at::Tensor> inputs = {x};
    if (has_weight && weight.requires_grad()) inputs.push_back(weight);
    const auto grads = torch::autograd::grad({out}, inputs, {grad_outputs[0]});
    return {grads[0], inputs.size() > 1 ? grads[1] : at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor RMSNorm::forward(const at::Tensor& x) const {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == hidden_size_, "RMSNorm: x must have last dim ", hidden_size_,
              ", got shape ", shape_string(x.sizes()));
  return rms_norm_with(x, weight, eps_);
}

namespace {
// Inference on a GPU: the fused epilogue kernels apply (they have no backward).
bool fused_inference(const at::Tensor& x, const at::Tensor& weight, std::initializer_list<const at::Tensor*> inputs) {
  if (!ops::fused_epilogues_enabled() || !x.is_cuda() || (weight.defined() && weight.scalar_type() != x.scalar_type())) {
    return false;
  }
  if (!at::GradMode::is_enabled()) return true;
  for (const at::Tensor* input : inputs) {
    if (input->requires_grad()) return false;
  }
  return !(weight.defined() && weight.requires_grad());
}

std::optional<at::Tensor> optional_weight(const at::Tensor& weight) {
  return weight.defined() ? std::optional<at::Tensor>(weight) : std::nullopt;
}
}  // namespace

std::pair<at::Tensor, at::Tensor> RMSNorm::add_forward(const at::Tensor& x, const at::Tensor& residual) const {
  if (fused_inference(x, weight, {&x, &residual}) && x.dim() >= 1 && x.size(-1) == hidden_size_) {
    return ops::add_rms_norm(x, residual, optional_weight(weight), eps_);
  }
  at::Tensor sum = x + residual;
  return {sum, forward(sum)};
}

at::Tensor RMSNorm::silu_forward(const at::Tensor& x) const {
  if (fused_inference(x, weight, {&x}) && x.dim() >= 1 && x.size(-1) == hidden_size_) {
    return ops::silu_rms_norm(x, optional_weight(weight), eps_);
  }
  const bool records = at::GradMode::is_enabled() && (x.requires_grad() || (weight.defined() && weight.requires_grad()));
  if (records && x.dim() >= 1 && x.size(-1) == hidden_size_) {
    return SiluNormFunction::apply(x, optional_weight(weight), eps_);
  }
  return forward(at::silu(x));
}

}  // namespace lintime::layers
