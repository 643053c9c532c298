// Registers the short-convolution implementations for the schemas in schemas.cpp: the forms are
// differentiable ATen ops (CompositeImplicitAutograd: autograd differentiates them on every
// backend); the in-place step mutates its state (CompositeExplicitAutograd).
#include "ops/conv/short_convolution.h"

#include <torch/library.h>

#include <optional>

namespace lintime::ops {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

at::Tensor or_undefined(const OptionalTensor& tensor) { return tensor.has_value() ? *tensor : at::Tensor(); }

ShortConvolutionOutputs short_convolution_composite(const at::Tensor& x, const at::Tensor& weight,
                                                    const OptionalTensor& bias, bool silu,
                                                    const OptionalTensor& initial_state, bool output_final_state,
                                                    const OptionalTensor& cu_seqlens) {
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

at::Tensor short_convolution_step_composite(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                            bool silu, at::Tensor& state) {
  return short_convolution_step_inplace(x, weight, or_undefined(bias), silu, state);
}

}  // namespace

TORCH_LIBRARY_IMPL(lintime, CompositeImplicitAutograd, m) {
  m.impl("short_convolution", short_convolution_composite);
  m.impl("short_convolution_reference", short_convolution_reference_composite);
}

TORCH_LIBRARY_IMPL(lintime, CompositeExplicitAutograd, m) {
  m.impl("short_convolution_step_", short_convolution_step_composite);
}

}  // namespace lintime::ops
