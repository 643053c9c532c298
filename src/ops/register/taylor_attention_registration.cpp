// Registers the Taylor linear attention (BASED) implementations for the schemas in schemas.cpp.
// All forms are written in differentiable ATen ops, so they are CompositeImplicitAutograd
// (autograd differentiates them, on every backend); the in-place step mutates its states and is
// CompositeExplicitAutograd. On a GPU the fused kernels (ops/based/cuda/taylor_cuda.h: bf16/fp16,
// feature dim 16, no varlen, no initial state) take over where they apply:
// - a chunked call that needs no gradient (prefill, inference) runs the fused prefill;
// - a chunked call that records a gradient, with value dims up to 64 and no final states asked
//   for (training), runs the fused prefill forward and the fused backward kernels through an
//   autograd function;
// - the in-place step on CUDA with fp32 states runs the fused step kernel.
// The prefill and backward kernels are ops of their own under the CUDA key (taylor_attention_fused,
// _fused_bwd), so that tracing sees them as ops. LINTIME_UNFUSED=taylor in the environment keeps
// the ATen forms (to compare; core/fused_paths.h).
#include "core/fused_paths.h"
#include "ops/register/dispatch.h"
#include "ops/based/taylor_attention.h"

#ifdef LINTIME_WITH_CUDA
#include "ops/based/cuda/taylor_cuda.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/autograd/custom_function.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <tuple>
#endif

#include <torch/library.h>

#include <optional>

namespace lintime::ops {
namespace {

using OptionalTensor = std::optional<at::Tensor>;

at::Tensor or_undefined(const OptionalTensor& tensor) { return tensor.has_value() ? *tensor : at::Tensor(); }

#ifdef LINTIME_WITH_CUDA
bool fused_kernels_enabled() {
  static const bool enabled = fused_path_enabled(FusedPath::taylor);
  return enabled;
}

// What the fused prefill and backward kernels share: bf16/fp16 [B, T, H, 16] q and k on CUDA, no
// varlen, no initial state, int sizes, and `smem` bytes of shared memory on this device.
bool fused_kernels_take(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer,
                        const OptionalTensor& cu_seqlens, size_t smem) {
  if (!fused_kernels_enabled() || !q.is_cuda() || q.dim() != 4 || k.dim() != 4 || v.dim() != 4 ||
      initial_state.has_value() || initial_normalizer.has_value() || cu_seqlens.has_value()) {
    return false;
  }
  const auto dtype = q.scalar_type();
  if ((dtype != at::kBFloat16 && dtype != at::kHalf) || k.scalar_type() != dtype || v.scalar_type() != dtype) return false;
  if (q.size(3) != cuda::kTaylorFeatureDim || q.numel() == 0 || v.size(3) == 0) return false;
  if (q.size(0) * q.size(1) * q.size(2) * v.size(3) > std::numeric_limits<int>::max()) return false;
  int device = 0, limit = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    return false;
  }
  return smem <= static_cast<size_t>(limit);
}

bool records_gradient(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
}

// Whether the fused prefill kernel takes this call (see the file comment).
bool fused_prefill_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer,
                         const OptionalTensor& cu_seqlens) {
  return !records_gradient(q, k, v) &&
         fused_kernels_take(q, k, v, initial_state, initial_normalizer, cu_seqlens, cuda::taylor_prefill_smem_bytes());
}

// Whether the fused training path (prefill forward, fused backward) takes this call.
bool fused_training_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const OptionalTensor& initial_state, const OptionalTensor& initial_normalizer,
                          bool output_final_state, const OptionalTensor& cu_seqlens) {
  return records_gradient(q, k, v) && !output_final_state && v.dim() == 4 &&
         v.size(3) <= cuda::kTaylorBackwardMaxValueDim &&
         fused_kernels_take(q, k, v, initial_state, initial_normalizer, cu_seqlens,
                            std::max(cuda::taylor_prefill_smem_bytes(), cuda::taylor_backward_smem_bytes()));
}

TaylorOutputs fused_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool normalize,
                            double eps, bool output_final_state) {
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), V = v.size(3);
  at::Tensor o = at::empty_like(vc);
  at::Tensor state, normalizer;
  cuda::TaylorParams params;
  params.batch = static_cast<int>(B);
  params.seqlen = static_cast<int>(T);
  params.heads = static_cast<int>(H);
  params.value_dim = static_cast<int>(V);
  params.normalize = normalize;
  params.eps = static_cast<float>(eps);
  params.half_precision = q.scalar_type() == at::kHalf;
  params.q = qc.data_ptr();
  params.k = kc.data_ptr();
  params.v = vc.data_ptr();
  params.o = o.data_ptr();
  if (output_final_state) {
    const auto options = q.options().dtype(at::kFloat);
    state = at::empty({B, H, cuda::kTaylorFeatures, V}, options);
    normalizer = at::empty({B, H, cuda::kTaylorFeatures}, options);
    params.final_state = state.data_ptr<float>();
    params.final_normalizer = normalizer.data_ptr<float>();
  }
  const cudaError_t status = cuda::taylor_prefill(params, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, "taylor_attention_chunk: the fused prefill kernel failed: ",
              cudaGetErrorString(status));
  return {o, state, normalizer};
}

// dq, dk, dv of the fused prefill from its inputs, its output o and the gradient do.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_backward(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor& o,
                                                             const at::Tensor& grad_o, bool normalize, double eps) {
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous(), oc = o.contiguous();
  const at::Tensor dout = grad_o.to(o.scalar_type()).contiguous();
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2);
  at::Tensor dq = at::empty_like(qc), dk = at::empty_like(kc), dv = at::empty_like(vc);
  const int padded = cuda::taylor_padded_seqlen(static_cast<int>(T));
  const auto workspace_options = q.options().dtype(at::kFloat);
  at::Tensor inverse_normalizer = at::empty({B, H, padded}, workspace_options);
  at::Tensor normalizer_grad = at::empty({B, H, padded}, workspace_options);
  cuda::TaylorBackwardParams params;
  params.batch = static_cast<int>(B);
  params.seqlen = static_cast<int>(T);
  params.heads = static_cast<int>(H);
  params.value_dim = static_cast<int>(v.size(3));
  params.normalize = normalize;
  params.eps = static_cast<float>(eps);
  params.half_precision = q.scalar_type() == at::kHalf;
  params.q = qc.data_ptr();
  params.k = kc.data_ptr();
  params.v = vc.data_ptr();
  params.o = oc.data_ptr();
  params.dout = dout.data_ptr();
  params.dq = dq.data_ptr();
  params.dk = dk.data_ptr();
  params.dv = dv.data_ptr();
  params.padded_seqlen = padded;
  params.inverse_normalizer = inverse_normalizer.data_ptr<float>();
  params.normalizer_grad = normalizer_grad.data_ptr<float>();
  const cudaError_t status = cuda::taylor_backward(params, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, "taylor_attention_chunk: the fused backward kernels failed: ",
              cudaGetErrorString(status));
  return {dq, dk, dv};
}

TaylorOutputs call_fused_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool normalize,
                                 double eps, bool output_final_state) {
  static const auto op = typed_op<decltype(fused_prefill)>("lintime::taylor_attention_fused");
  return op.call(q, k, v, normalize, eps, output_final_state);
}

// Training through the fused kernels: forward by the prefill kernel (o saved), backward by the
// two backward kernels (which recompute what they need from q, k, v and o).
class TaylorFusedFunction : public torch::autograd::Function<TaylorFusedFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, bool normalize, double eps) {
    at::Tensor o = std::get<0>(call_fused_prefill(q, k, v, normalize, eps, /*output_final_state=*/false));
    ctx->save_for_backward({q, k, v, o});
    ctx->saved_data["normalize"] = normalize;
    ctx->saved_data["eps"] = eps;
    return o;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    static const auto op = typed_op<decltype(fused_backward)>("lintime::taylor_attention_fused_bwd");
    const auto saved = ctx->get_saved_variables();
    auto [dq, dk, dv] = op.call(saved[0], saved[1], saved[2], saved[3], grad_outputs[0],
                                ctx->saved_data["normalize"].toBool(), ctx->saved_data["eps"].toDouble());
    return {dq, dk, dv, at::Tensor(), at::Tensor()};
  }
};

// The fused decoding step (in place) when it takes these inputs: q, k [B, H, 16] and v [B, H, V]
// of one floating dtype other than fp64, fp32 contiguous states.
bool fused_step_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& state,
                      const at::Tensor& normalizer) {
  if (!fused_kernels_enabled() || !q.is_cuda() || q.dim() != 3 || k.dim() != 3 || v.dim() != 3 || state.dim() != 4 ||
      normalizer.dim() != 3) {
    return false;
  }
  const auto dtype = q.scalar_type();
  if ((dtype != at::kBFloat16 && dtype != at::kHalf && dtype != at::kFloat) || k.scalar_type() != dtype ||
      v.scalar_type() != dtype) {
    return false;
  }
  return q.size(2) == cuda::kTaylorFeatureDim && state.scalar_type() == at::kFloat &&
         normalizer.scalar_type() == at::kFloat && state.is_contiguous() && normalizer.is_contiguous() &&
         state.is_cuda() && normalizer.is_cuda() && q.size(0) * q.size(1) <= std::numeric_limits<int>::max();
}

cuda::TaylorElement taylor_element_of(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? cuda::TaylorElement::bfloat16
         : dtype == at::kHalf   ? cuda::TaylorElement::float16
                                : cuda::TaylorElement::float32;
}
#endif

#ifdef LINTIME_WITH_CUDA
// The in-place step under the CUDA key: the fused kernel where it takes the inputs, else the
// general step (the CompositeExplicitAutograd kernel other backends get).
at::Tensor taylor_attention_step_inplace_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              bool normalize, double eps, at::Tensor& state,
                                              at::Tensor& normalizer) {
  if (fused_step_takes(q, k, v, state, normalizer)) {
    taylor_attention_step_check_inputs("lintime::taylor_attention_step_", q, k, v, eps, state, normalizer);
    const c10::cuda::CUDAGuard guard(q.device());
    const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    at::Tensor o = at::empty_like(vc);
    cuda::TaylorStepParams params;
    params.batch = static_cast<int>(q.size(0));
    params.heads = static_cast<int>(q.size(1));
    params.value_dim = static_cast<int>(v.size(2));
    params.normalize = normalize;
    params.eps = static_cast<float>(eps);
    params.element = taylor_element_of(q.scalar_type());
    params.q = qc.data_ptr();
    params.k = kc.data_ptr();
    params.v = vc.data_ptr();
    params.o = o.data_ptr();
    params.state = state.data_ptr<float>();
    params.normalizer = normalizer.data_ptr<float>();
    const cudaError_t status = cuda::taylor_step(params, c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(status == cudaSuccess, "taylor_attention_step_: the fused step kernel failed: ",
                cudaGetErrorString(status));
    return o;
  }
  return taylor_attention_step_inplace(q, k, v, normalize, eps, state, normalizer);
}
#endif

TaylorOutputs taylor_attention_chunk_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               bool normalize, double eps, const OptionalTensor& initial_state,
                                               const OptionalTensor& initial_normalizer,
                                               bool output_final_state, const OptionalTensor& cu_seqlens) {
#ifdef LINTIME_WITH_CUDA
  if (fused_prefill_takes(q, k, v, initial_state, initial_normalizer, cu_seqlens)) {
    taylor_attention_check_inputs("taylor_attention_chunk", q, k, v, eps, at::Tensor(), at::Tensor(), at::Tensor());
    return call_fused_prefill(q, k, v, normalize, eps, output_final_state);
  }
  if (fused_training_takes(q, k, v, initial_state, initial_normalizer, output_final_state, cu_seqlens)) {
    taylor_attention_check_inputs("taylor_attention_chunk", q, k, v, eps, at::Tensor(), at::Tensor(), at::Tensor());
    return {TaylorFusedFunction::apply(q, k, v, normalize, eps), at::Tensor(), at::Tensor()};
  }
#endif
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

#ifdef LINTIME_WITH_CUDA
TORCH_LIBRARY_IMPL(lintime, CUDA, m) {
  m.impl("taylor_attention_fused", fused_prefill);
  m.impl("taylor_attention_fused_bwd", fused_backward);
  m.impl("taylor_attention_step_", taylor_attention_step_inplace_cuda);
}
#endif

}  // namespace lintime::ops
