// Registers the Taylor linear attention (BASED) implementations for the schemas in schemas.cpp.
// All forms are written in differentiable ATen ops, so they are CompositeImplicitAutograd
// (autograd differentiates them, on every backend) until fused kernels take their place; the
// in-place step mutates its states and is CompositeExplicitAutograd.
#include "ops/based/taylor_attention.h"

#include <torch/library.h>

#include <optional>

namespace lintime::ops {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

at::Tensor or_undefined(const OptionalTensor& tensor) { return tensor.has_value() ? *tensor : at::Tensor(); }

TaylorOutputs taylor_attention_chunk_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               bool normalize, double eps, const OptionalTensor& initial_state,
                                               const OptionalTensor& initial_normalizer,
                                               bool output_final_state, const OptionalTensor& cu_seqlens) {
  return taylor_attention_chunk_fwd(q, k, v, normalize, eps, or_undefined(initial_state),
                                    or_undefined(initial_normalizer), output_final_state,
                                    or_undefined(cu_seqlens));
}

TaylorOutputs taylor_attention_reference_composite(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, bool normalize, double eps,
                                                   const OptionalTensor& initial_state,
                                                   const OptionalTensor& initial_normalizer,
                                                   bool output_final_state, const OptionalTensor& cu_seqlens) {
  return taylor_attention_reference_fwd(q, k, v, normalize, eps, or_undefined(initial_state),
                                        or_undefined(initial_normalizer), output_final_state,
                                        or_undefined(cu_seqlens));
}

}  // namespace

TORCH_LIBRARY_IMPL(lintime, CompositeImplicitAutograd, m) {
  m.impl("taylor_attention_chunk", taylor_attention_chunk_composite);
  m.impl("taylor_attention_reference", taylor_attention_reference_composite);
  m.impl("taylor_attention_step", taylor_attention_step_functional);
}

TORCH_LIBRARY_IMPL(lintime, CompositeExplicitAutograd, m) {
  m.impl("taylor_attention_step_", taylor_attention_step_inplace);
}

}  // namespace lintime::ops
