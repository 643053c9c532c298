// Registers the sliding-window attention implementations for the schemas in schemas.cpp: the
// forms are differentiable ATen ops (CompositeImplicitAutograd); the cache helpers mutate or
// build inference state (CompositeExplicitAutograd). On a GPU, a call that the fused kernels take
// (ops/based/cuda/sliding_window_cuda.h: bf16/fp16, head dims 64, no varlen) runs the fused
// forward; when it records a gradient, through an autograd function whose backward is the fused
// backward (the forward then also keeps each row's log-sum-exp). The kernels are ops of their own
// under the CUDA key (sliding_window_attention_fused, _fused_bwd), so that tracing sees them as
// ops. LINTIME_UNFUSED=window in the environment keeps the ATen form.
#include "ops/register/dispatch.h"
#include "core/fused_paths.h"
#include "ops/based/sliding_window_attention.h"

#ifdef LINTIME_WITH_CUDA
#include "ops/based/cuda/sliding_window_cuda.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <limits>
#include <string_view>
#include <tuple>
#endif

#include <torch/library.h>

#include <optional>

namespace lintime::ops {
namespace {

at::Tensor or_undefined(const std::optional<at::Tensor>& tensor) { return tensor.has_value() ? *tensor : at::Tensor(); }

#ifdef LINTIME_WITH_CUDA
// Whether the fused kernels take this call (gradient or not).
bool fused_window_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                        const std::optional<at::Tensor>& cu_seqlens) {
  static const bool enabled = fused_path_enabled(FusedPath::window);
  if (!enabled || !q.is_cuda() || cu_seqlens.has_value() || q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  const auto dtype = q.scalar_type();
  if ((dtype != at::kBFloat16 && dtype != at::kHalf) || k.scalar_type() != dtype || v.scalar_type() != dtype) return false;
  if (q.size(3) != cuda::kWindowHeadDim || k.size(3) != cuda::kWindowHeadDim || v.size(3) != cuda::kWindowHeadDim) {
    return false;
  }
  return q.numel() > 0 && window >= 1 && window <= std::numeric_limits<int>::max() &&
         q.size(0) * q.size(1) * q.size(2) <= std::numeric_limits<int>::max() / cuda::kWindowHeadDim;
}

bool records_gradient(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
}

// What the forward and backward kernels' parameters share: sizes, window, scale, element type and
// the (contiguous) inputs.
template <typename Params>
void set_inputs(Params& params, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                double scale) {
  params.batch = static_cast<int>(q.size(0));
  params.seqlen = static_cast<int>(q.size(1));
  params.heads = static_cast<int>(q.size(2));
  params.window = static_cast<int>(window);
  params.scale = static_cast<float>(scale);
  params.half_precision = q.scalar_type() == at::kHalf;
  params.q = q.data_ptr();
  params.k = k.data_ptr();
  params.v = v.data_ptr();
}

// The fused forward: o, and each row's log2-sum-exp when `lse` is asked for (training).
std::tuple<at::Tensor, at::Tensor> fused_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 int64_t window, double scale, bool lse) {
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  at::Tensor o = at::empty_like(vc);
  at::Tensor row_lse = lse ? at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat)) : at::Tensor();
  cuda::SlidingWindowParams params;
  set_inputs(params, qc, kc, vc, window, scale);
  params.o = o.data_ptr();
  params.lse = lse ? row_lse.data_ptr<float>() : nullptr;
  const cudaError_t status = cuda::sliding_window_forward(params, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, "sliding_window_attention: the fused kernel failed: ", cudaGetErrorString(status));
  return {o, row_lse};
}

// dq, dk, dv from the forward's o and row log-sum-exp.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_backward(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor& o,
                                                             const at::Tensor& lse, const at::Tensor& grad_o,
                                                             int64_t window, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous(), oc = o.contiguous();
  const at::Tensor dout = grad_o.to(q.scalar_type()).contiguous();
  at::Tensor dq = at::empty_like(qc), dk = at::empty_like(kc), dv = at::empty_like(vc);
  at::Tensor delta = at::empty_like(lse);
  cuda::SlidingWindowBackwardParams params;
  set_inputs(params, qc, kc, vc, window, scale);
  params.o = oc.data_ptr();
  params.dout = dout.data_ptr();
  params.lse = lse.data_ptr<float>();
  params.delta = delta.data_ptr<float>();
  params.dq = dq.data_ptr();
  params.dk = dk.data_ptr();
  params.dv = dv.data_ptr();
  const cudaError_t status = cuda::sliding_window_backward(params, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, "sliding_window_attention: the fused backward failed: ",
              cudaGetErrorString(status));
  return {dq, dk, dv};
}

std::tuple<at::Tensor, at::Tensor> call_fused_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                      int64_t window, double scale, bool lse) {
  static const auto op = typed_op<decltype(fused_forward)>("lintime::sliding_window_attention_fused");
  return op.call(q, k, v, window, scale, lse);
}

// Training through the fused kernels: the forward keeps o and the rows' log-sum-exp, the backward
// recomputes P from them.
class SlidingWindowFusedFunction : public torch::autograd::Function<SlidingWindowFusedFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, int64_t window, double scale) {
    auto [o, lse] = call_fused_forward(q, k, v, window, scale, /*lse=*/true);
    ctx->save_for_backward({q, k, v, o, lse});
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale;
    return o;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    static const auto op = typed_op<decltype(fused_backward)>("lintime::sliding_window_attention_fused_bwd");
    const auto saved = ctx->get_saved_variables();
    auto [dq, dk, dv] = op.call(saved[0], saved[1], saved[2], saved[3], saved[4], grad_outputs[0],
                                ctx->saved_data["window"].toInt(), ctx->saved_data["scale"].toDouble());
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};
#endif

at::Tensor sliding_window_attention_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              int64_t window, double scale,
                                              const std::optional<at::Tensor>& cu_seqlens) {
#ifdef LINTIME_WITH_CUDA
  if (fused_window_takes(q, k, v, window, cu_seqlens)) {
    sliding_window_check_inputs("lintime::sliding_window_attention", q, k, v, window, at::Tensor());
    if (records_gradient(q, k, v)) return SlidingWindowFusedFunction::apply(q, k, v, window, scale);
    return std::get<0>(call_fused_forward(q, k, v, window, scale, /*lse=*/false));
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

#ifdef LINTIME_WITH_CUDA
TORCH_LIBRARY_IMPL(lintime, CUDA, m) {
  m.impl("sliding_window_attention_fused", fused_forward);
  m.impl("sliding_window_attention_fused_bwd", fused_backward);
}
#endif

}  // namespace lintime::ops
