// Registers the sliding-window attention implementations for the schemas in schemas.cpp: the
// forms are differentiable ATen ops (CompositeImplicitAutograd) until fused kernels take the
// CUDA key; the cache helpers mutate or build inference state (CompositeExplicitAutograd).
#include "ops/based/sliding_window_attention.h"

#include <torch/library.h>

#include <optional>

namespace lintime::ops {
namespace {

at::Tensor or_undefined(const std::optional<at::Tensor>& tensor) { return tensor.has_value() ? *tensor : at::Tensor(); }

at::Tensor sliding_window_attention_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              int64_t window, double scale,
                                              const std::optional<at::Tensor>& cu_seqlens) {
  return sliding_window_attention_fwd(q, k, v, window, scale, or_undefined(cu_seqlens));
}

at::Tensor sliding_window_attention_reference_composite(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v, int64_t window, double scale,
                                                        const std::optional<at::Tensor>& cu_seqlens) {
  return sliding_window_attention_reference_fwd(q, k, v, window, scale, or_undefined(cu_seqlens));
}

}  // namespace

TORCH_LIBRARY_IMPL(lintime, CompositeImplicitAutograd, m) {
  m.impl("sliding_window_attention", sliding_window_attention_composite);
  m.impl("sliding_window_attention_reference", sliding_window_attention_reference_composite);
}

TORCH_LIBRARY_IMPL(lintime, CompositeExplicitAutograd, m) {
  m.impl("sliding_window_cache_from_prefill", build_sliding_window_cache);
  m.impl("sliding_window_attention_step_", sliding_window_attention_step_inplace);
}

}  // namespace lintime::ops
