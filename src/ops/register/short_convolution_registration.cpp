// Registers the short-convolution implementations for the schemas in schemas.cpp: the forms are
// differentiable ATen ops (CompositeImplicitAutograd: autograd differentiates them on every
// backend); the in-place step mutates its state (CompositeExplicitAutograd). On a GPU the fused
// kernels (ops/conv/cuda/short_convolution_cuda.h) take contiguous inputs of one element type
// (bf16, fp16, fp32), widths up to 8 and no varlen: the forward with its states, training (no
// initial state, no final state asked for) through an autograd function with the fused backward,
// and the in-place step. The kernels are ops of their own under the CUDA key (short_convolution_fused,
// _fused_bwd, and short_convolution_step_'s CUDA kernel), so that tracing sees them as ops.
// LINTIME_UNFUSED=conv in the environment keeps the ATen forms (core/fused_paths.h).
#include "core/fused_paths.h"
#include "ops/register/dispatch.h"
#include "ops/conv/short_convolution.h"

#ifdef LINTIME_WITH_CUDA
#include "ops/conv/cuda/short_convolution_cuda.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <string_view>
#endif

#include <torch/library.h>

#include <optional>
#include <vector>

namespace lintime::ops {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

at::Tensor or_undefined(const OptionalTensor& tensor) { return tensor.has_value() ? *tensor : at::Tensor(); }

#ifdef LINTIME_WITH_CUDA
std::optional<cuda::ConvElement> conv_element_of(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return cuda::ConvElement::bfloat16;
    case at::kHalf: return cuda::ConvElement::float16;
    case at::kFloat: return cuda::ConvElement::float32;
    default: return std::nullopt;
  }
}

// Whether the fused kernels take x [B, T, D] (or [B, D] for the step), weight [D, 1, W], bias and
// state: CUDA, one element type, contiguous, W ≤ 8.
bool fused_conv_takes(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                      const OptionalTensor& state) {
  static const bool enabled = fused_path_enabled(FusedPath::conv);
  if (!enabled || !x.is_cuda() || !conv_element_of(x.scalar_type())) return false;
  if (weight.dim() != 3 || weight.size(2) < 1 || weight.size(2) > cuda::kShortConvolutionMaxWidth) return false;
  std::vector<const at::Tensor*> tensors = {&x, &weight};
  if (bias.has_value()) tensors.push_back(&*bias);
  if (state.has_value()) tensors.push_back(&*state);
  for (const at::Tensor* t : tensors) {
    if (!t->is_cuda() || t->device() != x.device() || t->scalar_type() != x.scalar_type() || !t->is_contiguous()) {
      return false;
    }
  }
  return true;
}

cuda::ShortConvolutionParams conv_params(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                         bool silu) {
  cuda::ShortConvolutionParams params;
  params.element = *conv_element_of(x.scalar_type());
  params.batch = x.size(0);
  params.seqlen = x.dim() == 3 ? x.size(1) : 1;
  params.channels = x.size(-1);
  params.width = static_cast<int>(weight.size(2));
  params.silu = silu;
  params.x = x.data_ptr();
  params.weight = weight.data_ptr();
  params.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  return params;
}

void check_conv_launch(cudaError_t status) {
  TORCH_CHECK(status == cudaSuccess, "short_convolution: the fused CUDA kernel failed: ", cudaGetErrorString(status));
}

ShortConvolutionOutputs fused_conv_forward(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                           bool silu, const OptionalTensor& initial_state, bool output_final_state) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x), final_state;
  cuda::ShortConvolutionParams params = conv_params(x, weight, bias, silu);
  params.initial_state = initial_state.has_value() ? initial_state->data_ptr() : nullptr;
  params.y = y.data_ptr();
  if (output_final_state) {
    final_state = at::empty({x.size(0), weight.size(2) - 1, x.size(2)}, x.options());
    params.final_state = final_state.data_ptr();
  }
  check_conv_launch(cuda::short_convolution_forward(params, c10::cuda::getCurrentCUDAStream()));
  return {y, final_state};
}

// dx, dweight, dbias of the fused forward (no initial state, no final state): the backward
// recomputes the pre-activations from x.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_conv_backward(const at::Tensor& x, const at::Tensor& weight,
                                                                  const OptionalTensor& bias, bool silu,
                                                                  const at::Tensor& grad_y) {
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor dy = grad_y.to(x.scalar_type()).contiguous();
  at::Tensor dx = at::empty_like(x);
  at::Tensor dweight = at::zeros({weight.size(0), weight.size(2)}, x.options().dtype(at::kFloat));
  at::Tensor dbias = bias.has_value() ? at::zeros({weight.size(0)}, x.options().dtype(at::kFloat)) : at::Tensor();
  cuda::ShortConvolutionParams params = conv_params(x, weight, bias, silu);
  params.dy = dy.data_ptr();
  params.dx = dx.data_ptr();
  params.dweight = dweight.data_ptr<float>();
  params.dbias = bias.has_value() ? dbias.data_ptr<float>() : nullptr;
  check_conv_launch(cuda::short_convolution_backward(params, c10::cuda::getCurrentCUDAStream()));
  return {dx, dweight.to(weight.scalar_type()).view(weight.sizes()),
          bias.has_value() ? dbias.to(bias->scalar_type()) : at::Tensor()};
}

ShortConvolutionOutputs call_fused_conv_forward(const at::Tensor& x, const at::Tensor& weight,
                                                const OptionalTensor& bias, bool silu,
                                                const OptionalTensor& initial_state, bool output_final_state) {
  static const auto op = typed_op<decltype(fused_conv_forward)>("lintime::short_convolution_fused");
  return op.call(x, weight, bias, silu, initial_state, output_final_state);
}

// Training through the fused kernels (no initial state, no final state).
class ShortConvolutionFusedFunction : public torch::autograd::Function<ShortConvolutionFusedFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const OptionalTensor& bias, bool silu) {
    ctx->save_for_backward({x, weight, bias.has_value() ? *bias : at::Tensor()});
    ctx->saved_data["silu"] = silu;
    return std::get<0>(call_fused_conv_forward(x, weight, bias, silu, std::nullopt, false));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    static const auto op = typed_op<decltype(fused_conv_backward)>("lintime::short_convolution_fused_bwd");
    const auto saved = ctx->get_saved_variables();
    const OptionalTensor bias = saved[2].defined() ? OptionalTensor(saved[2]) : std::nullopt;
    auto [dx, dweight, dbias] = op.call(saved[0], saved[1], bias, ctx->saved_data["silu"].toBool(), grad_outputs[0]);
    return {dx, dweight, dbias, at::Tensor()};
  }
};

// The in-place step under the CUDA key: the fused kernel where it takes the inputs, else the
// general step (the CompositeExplicitAutograd kernel other backends get).
at::Tensor short_convolution_step_cuda(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                       bool silu, at::Tensor& state) {
  if (x.dim() == 2 && fused_conv_takes(x, weight, bias, state)) {
    short_convolution_check_inputs("lintime::short_convolution_step_", x.unsqueeze(1), weight, or_undefined(bias), state,
                                   at::Tensor());
    const c10::cuda::CUDAGuard guard(x.device());
    at::Tensor y = at::empty_like(x);
    cuda::ShortConvolutionParams params = conv_params(x, weight, bias, silu);
    params.initial_state = state.data_ptr();
    params.final_state = state.data_ptr();
    params.y = y.data_ptr();
    check_conv_launch(cuda::short_convolution_step(params, c10::cuda::getCurrentCUDAStream()));
    return y;
  }
  return short_convolution_step_inplace(x, weight, or_undefined(bias), silu, state);
}
#endif

ShortConvolutionOutputs short_convolution_composite(const at::Tensor& x, const at::Tensor& weight,
                                                    const OptionalTensor& bias, bool silu,
                                                    const OptionalTensor& initial_state, bool output_final_state,
                                                    const OptionalTensor& cu_seqlens) {
#ifdef LINTIME_WITH_CUDA
  if (!cu_seqlens.has_value() && x.dim() == 3 && fused_conv_takes(x, weight, bias, initial_state)) {
    short_convolution_check_inputs("lintime::short_convolution", x, weight, or_undefined(bias),
                                   or_undefined(initial_state), at::Tensor());
    bool records = false;
    if (at::GradMode::is_enabled()) {
      records = x.requires_grad() || weight.requires_grad() || (bias.has_value() && bias->requires_grad()) ||
                (initial_state.has_value() && initial_state->requires_grad());
    }
    if (!records) return call_fused_conv_forward(x, weight, bias, silu, initial_state, output_final_state);
    if (!initial_state.has_value() && !output_final_state) {
      return {ShortConvolutionFusedFunction::apply(x, weight, bias, silu), at::Tensor()};
    }
  }
#endif
  return short_convolution_fwd(x, weight, or_undefined(bias), silu, or_undefined(initial_state), output_final_state,
                               or_undefined(cu_seqlens));
}

ShortConvolutionOutputs short_convolution_reference_composite(const at::Tensor& x, const at::Tensor& weight,
                                                              const OptionalTensor& bias, bool silu,
                                                              const OptionalTensor& initial_state,
                                                              bool output_final_state,
                                                              const OptionalTensor& cu_seqlens) {
  return short_convolution_reference_fwd(x, weight, or_undefined(bias), silu, or_undefined(initial_state),
                                         output_final_state, or_undefined(cu_seqlens));
}

at::Tensor short_convolution_step_general(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                          bool silu, at::Tensor& state) {
  return short_convolution_step_inplace(x, weight, or_undefined(bias), silu, state);
}

}  // namespace

TORCH_LIBRARY_IMPL(lintime, CompositeImplicitAutograd, m) {
  m.impl("short_convolution", short_convolution_composite);
  m.impl("short_convolution_reference", short_convolution_reference_composite);
}

TORCH_LIBRARY_IMPL(lintime, CompositeExplicitAutograd, m) {
  m.impl("short_convolution_step_", short_convolution_step_general);
}

#ifdef LINTIME_WITH_CUDA
TORCH_LIBRARY_IMPL(lintime, CUDA, m) {
  m.impl("short_convolution_fused", fused_conv_forward);
  m.impl("short_convolution_fused_bwd", fused_conv_backward);
  m.impl("short_convolution_step_", short_convolution_step_cuda);
}
#endif

}  // namespace lintime::ops
