// Registers the sliding-window attention implementations for the schemas in schemas.cpp: the
// forms are differentiable ATen ops (CompositeImplicitAutograd); the cache helpers mutate or
// build inference state (CompositeExplicitAutograd). On a GPU, a call that needs no gradient and
// that the fused forward takes (ops/based/cuda/sliding_window_cuda.h: bf16/fp16, head dims 64,
// no varlen) runs it; LINTIME_WINDOW_CUDA=0 in the environment keeps the ATen form.
#include "ops/based/sliding_window_attention.h"

#ifdef LINTIME_WITH_CUDA
#include "ops/based/cuda/sliding_window_cuda.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <limits>
#include <string_view>
#endif

#include <torch/library.h>

#include <optional>

namespace lintime::ops {
namespace {

at::Tensor or_undefined(const std::optional<at::Tensor>& tensor) { return tensor.has_value() ? *tensor : at::Tensor(); }

#ifdef LINTIME_WITH_CUDA
bool fused_window_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                        const std::optional<at::Tensor>& cu_seqlens) {
  static const bool enabled = [] {
    const char* setting = std::getenv("LINTIME_WINDOW_CUDA");
    return setting == nullptr || std::string_view(setting) != "0";
  }();
  if (!enabled || !q.is_cuda() || cu_seqlens.has_value() || q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  const auto dtype = q.scalar_type();
  if ((dtype != at::kBFloat16 && dtype != at::kHalf) || k.scalar_type() != dtype || v.scalar_type() != dtype) return false;
  if (q.size(3) != cuda::kWindowHeadDim || k.size(3) != cuda::kWindowHeadDim || v.size(3) != cuda::kWindowHeadDim) {
    return false;
  }
  if (at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad())) return false;
  return q.numel() > 0 && window >= 1 && window <= std::numeric_limits<int>::max() &&
         q.size(0) * q.size(1) * q.size(2) <= std::numeric_limits<int>::max() / cuda::kWindowHeadDim;
}
#endif

at::Tensor sliding_window_attention_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              int64_t window, double scale,
                                              const std::optional<at::Tensor>& cu_seqlens) {
#ifdef LINTIME_WITH_CUDA
  if (fused_window_takes(q, k, v, window, cu_seqlens)) {
    sliding_window_check_inputs("lintime::sliding_window_attention", q, k, v, window, at::Tensor());
    const c10::cuda::CUDAGuard guard(q.device());
    const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    at::Tensor o = at::empty_like(vc);
    cuda::SlidingWindowParams params;
    params.batch = static_cast<int>(q.size(0));
    params.seqlen = static_cast<int>(q.size(1));
    params.heads = static_cast<int>(q.size(2));
    params.window = static_cast<int>(window);
    params.scale = static_cast<float>(scale);
    params.half_precision = q.scalar_type() == at::kHalf;
    params.q = qc.data_ptr();
    params.k = kc.data_ptr();
    params.v = vc.data_ptr();
    params.o = o.data_ptr();
    const cudaError_t status = cuda::sliding_window_forward(params, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(status == cudaSuccess, "sliding_window_attention: the fused kernel failed: ", cudaGetErrorString(status));
    return o;
  }
#endif
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
