// Registers the GSA implementations for the schemas in schemas.cpp: CPU kernels for gsa_chunk,
// gsa_chunk_bwd, gsa_step and gsa_step_; CompositeImplicitAutograd for gsa_reference and
// abc_gates (autograd differentiates their ATen ops); and an Autograd kernel for gsa_chunk whose
// backward is the analytic gsa_chunk_bwd, called through the dispatcher.
#include "ops/gsa/gsa.h"
#include "ops/register/ops.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <vector>

namespace lintime::ops {
#ifdef LINTIME_WITH_CUDA
// gsa_cuda_registration.cpp: the shapes of the internals its chunked kernels keep.
std::vector<int64_t> gsa_fused_internals_layout(at::IntArrayRef sizes, at::ScalarType dtype, const at::Device& device);
#endif
namespace {

using OptionalTensor = std::optional<at::Tensor>;
using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

at::Tensor value_or_undefined(const OptionalTensor& tensor) {
  return tensor.has_value() ? *tensor : at::Tensor();
}

OptionalTensor defined_or_nullopt(const at::Tensor& tensor) {
  return tensor.defined() ? OptionalTensor(tensor) : std::nullopt;
}

Tensors3 gsa_chunk_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& s, const at::Tensor& g, double scale,
                       const OptionalTensor& initial_state_k, const OptionalTensor& initial_state_v,
                       bool output_final_state, const OptionalTensor& cu_seqlens) {
  return gsa_chunk_fwd(q, k, v, s, g, scale, value_or_undefined(initial_state_k),
                       value_or_undefined(initial_state_v), output_final_state,
                       value_or_undefined(cu_seqlens));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gsa_chunk_bwd_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& s, const at::Tensor& g, double scale,
                  const OptionalTensor& initial_state_k, const OptionalTensor& initial_state_v,
                  const OptionalTensor& cu_seqlens, const at::Tensor& grad_o,
                  const OptionalTensor& grad_final_state_k,
                  const OptionalTensor& grad_final_state_v) {
  return gsa_chunk_bwd(q, k, v, s, g, scale, value_or_undefined(initial_state_k),
                       value_or_undefined(initial_state_v), value_or_undefined(cu_seqlens), grad_o,
                       value_or_undefined(grad_final_state_k),
                       value_or_undefined(grad_final_state_v));
}

// The internals' shapes (schemas.cpp): the fused CUDA kernels' when this build has them, else none.
std::vector<int64_t> gsa_chunk_internals_layout(at::IntArrayRef sizes, at::ScalarType dtype, at::Device device) {
#ifdef LINTIME_WITH_CUDA
  return gsa_fused_internals_layout(sizes, dtype, device);
#else
  TORCH_CHECK(sizes.size() == 9, "lintime::gsa_chunk_internals_layout: sizes must be [B, T, HQ, H, K, V, M, N, varlen], got ",
              sizes.size(), " values");
  return {};
#endif
}

// The general path keeps no internals: its backward recomputes what it needs.
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> gsa_chunk_with_internals_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const OptionalTensor& initial_state_k,
    const OptionalTensor& initial_state_v, bool output_final_state, const OptionalTensor& cu_seqlens) {
  auto [o, final_state_k, final_state_v] = gsa_chunk_cpu(q, k, v, s, g, scale, initial_state_k,
                                                         initial_state_v, output_final_state, cu_seqlens);
  return {o, final_state_k, final_state_v, {}};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gsa_chunk_bwd_with_internals_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& s, const at::Tensor& g, double scale,
                                 const OptionalTensor& initial_state_k,
                                 const OptionalTensor& initial_state_v,
                                 const OptionalTensor& cu_seqlens, const at::Tensor& grad_o,
                                 const OptionalTensor& grad_final_state_k,
                                 const OptionalTensor& grad_final_state_v, at::TensorList internals) {
  TORCH_CHECK(internals.empty(), "lintime::gsa_chunk_bwd_with_internals: the general path keeps no "
              "internals; expected an empty list, got ", internals.size(), " tensors");
  return gsa_chunk_bwd_cpu(q, k, v, s, g, scale, initial_state_k, initial_state_v, cu_seqlens,
                           grad_o, grad_final_state_k, grad_final_state_v);
}

Tensors3 gsa_reference_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& s, const OptionalTensor& g, double scale,
                                 const OptionalTensor& initial_state_k,
                                 const OptionalTensor& initial_state_v, bool output_final_state,
                                 const OptionalTensor& cu_seqlens) {
  return gsa_reference_fwd(q, k, v, s, value_or_undefined(g), scale,
                           value_or_undefined(initial_state_k), value_or_undefined(initial_state_v),
                           output_final_state, value_or_undefined(cu_seqlens));
}

std::tuple<at::Tensor, at::Tensor> abc_gates_composite(const at::Tensor& s_logits,
                                                       const OptionalTensor& cu_seqlens) {
  return abc_gates(s_logits, value_or_undefined(cu_seqlens));
}

// The backend calls gsa_chunk's autograd functions make, through the dispatcher (so that a CUDA
// kernel registered later is picked up the same way). When a gradient will be taken, the
// forward goes through gsa_chunk_with_internals and the backward through
// gsa_chunk_bwd_with_internals, so that the fused kernels' backward does not recompute what the
// forward computed.
struct ChunkForward {
  Tensors3 outputs;                  // o, final_state_k, final_state_v
  std::vector<at::Tensor> internals;  // empty unless kept
};

ChunkForward chunk_forward_below_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const at::Tensor& s, const at::Tensor& g, double scale,
                                          const OptionalTensor& initial_state_k, const OptionalTensor& initial_state_v,
                                          bool output_final_state, const OptionalTensor& cu_seqlens,
                                          bool keep_internals) {
  static auto forward_op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("lintime::gsa_chunk", "")
                               .typed<decltype(gsa_chunk_cpu)>();
  static auto forward_with_internals_op = c10::Dispatcher::singleton()
                                              .findSchemaOrThrow("lintime::gsa_chunk_with_internals", "")
                                              .typed<decltype(gsa_chunk_with_internals_cpu)>();
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  ChunkForward result;
  if (keep_internals) {
    auto [o, final_state_k, final_state_v, kept] = forward_with_internals_op.call(
        q, k, v, s, g, scale, initial_state_k, initial_state_v, output_final_state, cu_seqlens);
    result.outputs = {o, final_state_k, final_state_v};
    result.internals = std::move(kept);
  } else {
    result.outputs = forward_op.call(q, k, v, s, g, scale, initial_state_k, initial_state_v, output_final_state,
                                     cu_seqlens);
  }
  return result;
}

// What the functions save: the five inputs, both initial states and cu_seqlens (undefined where
// absent), then the internals.
constexpr size_t kSavedInputs = 8;

using ChunkGradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// (d q, d k, d v, d s, d g, d initial_state_k, d initial_state_v) from what was saved.
ChunkGradients chunk_backward(const std::vector<at::Tensor>& saved, double scale, at::Tensor grad_o,
                              const at::Tensor& grad_final_state_k, const at::Tensor& grad_final_state_v) {
  static auto backward_op = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("lintime::gsa_chunk_bwd", "")
                                .typed<decltype(gsa_chunk_bwd_cpu)>();
  static auto backward_with_internals_op = c10::Dispatcher::singleton()
                                               .findSchemaOrThrow("lintime::gsa_chunk_bwd_with_internals", "")
                                               .typed<decltype(gsa_chunk_bwd_with_internals_cpu)>();
  const auto& q = saved[0];
  const auto& v = saved[2];
  if (!grad_o.defined()) grad_o = at::zeros({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  if (saved.size() > kSavedInputs) {
    return backward_with_internals_op.call(saved[0], saved[1], saved[2], saved[3], saved[4], scale,
                                           defined_or_nullopt(saved[5]), defined_or_nullopt(saved[6]),
                                           defined_or_nullopt(saved[7]), grad_o, defined_or_nullopt(grad_final_state_k),
                                           defined_or_nullopt(grad_final_state_v),
                                           at::TensorList(saved).slice(kSavedInputs));
  }
  return backward_op.call(saved[0], saved[1], saved[2], saved[3], saved[4], scale, defined_or_nullopt(saved[5]),
                          defined_or_nullopt(saved[6]), defined_or_nullopt(saved[7]), grad_o,
                          defined_or_nullopt(grad_final_state_k), defined_or_nullopt(grad_final_state_v));
}

// Autograd for gsa_chunk: forward runs the backend kernel below autograd, backward calls the
// registered gsa_chunk_bwd (with the internals when kept).
class GsaChunkFunction : public torch::autograd::Function<GsaChunkFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
      const at::Tensor& v, const at::Tensor& s, const at::Tensor& g, double scale,
      const OptionalTensor& initial_state_k, const OptionalTensor& initial_state_v,
      bool output_final_state, const OptionalTensor& cu_seqlens, bool keep_internals) {
    ChunkForward result = chunk_forward_below_autograd(q, k, v, s, g, scale, initial_state_k, initial_state_v,
                                                       output_final_state, cu_seqlens, keep_internals);
    std::vector<at::Tensor> saved = {q, k, v, s, g, value_or_undefined(initial_state_k),
                                     value_or_undefined(initial_state_v), value_or_undefined(cu_seqlens)};
    saved.insert(saved.end(), result.internals.begin(), result.internals.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["scale"] = scale;
    ctx->set_materialize_grads(false);
    auto& [o, final_state_k, final_state_v] = result.outputs;
    if (output_final_state) return {o, final_state_k, final_state_v};
    // A custom Function cannot return undefined tensors: stand-ins that gsa_chunk_autograd
    // turns back into undefined ones.
    auto no_state_k = at::empty({0}, o.options()), no_state_v = at::empty({0}, o.options());
    ctx->mark_non_differentiable({no_state_k, no_state_v});
    return {o, no_state_k, no_state_v};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto [grad_q, grad_k, grad_v, grad_s, grad_g, grad_initial_state_k, grad_initial_state_v] =
        chunk_backward(ctx->get_saved_variables(), ctx->saved_data["scale"].toDouble(), grad_outputs[0],
                       grad_outputs[1], grad_outputs[2]);
    // One gradient per forward argument; non-tensor and absent arguments get undefined ones.
    return {grad_q, grad_k, grad_v, grad_s, grad_g, at::Tensor(), grad_initial_state_k,
            grad_initial_state_v, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// gsa_chunk(swish(q), swish(k), swish(v), s, g) from a zero state, keeping q, k, v before the swish
// (not after: the swish's own backward would keep those too); the backward recomputes the swish,
// bit for bit as at::silu rounds it, and back-propagates through at::silu_backward.
class SwishGsaChunkFunction : public torch::autograd::Function<SwishGsaChunkFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& s, const at::Tensor& g, double scale,
                            const OptionalTensor& cu_seqlens) {
    ChunkForward result = chunk_forward_below_autograd(at::silu(q), at::silu(k), at::silu(v), s, g, scale,
                                                       std::nullopt, std::nullopt, false, cu_seqlens, true);
    std::vector<at::Tensor> saved = {q, k, v, s, g, at::Tensor(), at::Tensor(), value_or_undefined(cu_seqlens)};
    saved.insert(saved.end(), result.internals.begin(), result.internals.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["scale"] = scale;
    return std::get<0>(result.outputs);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    std::vector<at::Tensor> saved = ctx->get_saved_variables();
    const at::Tensor q = saved[0], k = saved[1], v = saved[2];
    saved[0] = at::silu(q);
    saved[1] = at::silu(k);
    saved[2] = at::silu(v);
    auto [grad_swish_q, grad_swish_k, grad_swish_v, grad_s, grad_g, unused_k, unused_v] =
        chunk_backward(saved, ctx->saved_data["scale"].toDouble(), grad_outputs[0], at::Tensor(), at::Tensor());
    return {at::silu_backward(grad_swish_q, q), at::silu_backward(grad_swish_k, k), at::silu_backward(grad_swish_v, v),
            grad_s, grad_g, at::Tensor(), at::Tensor()};
  }
};

Tensors3 gsa_chunk_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& s, const at::Tensor& g, double scale,
                            const OptionalTensor& initial_state_k,
                            const OptionalTensor& initial_state_v, bool output_final_state,
                            const OptionalTensor& cu_seqlens) {
  // Internals are kept only when this call records a graph (a gradient will be asked for).
  bool records_graph = false;
  if (at::GradMode::is_enabled()) {
    for (const at::Tensor* input : {&q, &k, &v, &s, &g}) records_graph |= input->requires_grad();
    for (const OptionalTensor* state : {&initial_state_k, &initial_state_v}) {
      records_graph |= state->has_value() && (*state)->requires_grad();
    }
  }
  auto outputs = GsaChunkFunction::apply(q, k, v, s, g, scale, initial_state_k, initial_state_v,
                                         output_final_state, cu_seqlens, records_graph);
  if (!output_final_state) return {outputs[0], at::Tensor(), at::Tensor()};
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace

at::Tensor gsa_chunk_of_swish(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
                              const at::Tensor& g, double scale, const std::optional<at::Tensor>& cu_seqlens) {
  bool records_graph = false;
  if (at::GradMode::is_enabled()) {
    for (const at::Tensor* input : {&q, &k, &v, &s, &g}) records_graph |= input->requires_grad();
  }
  if (!records_graph) {
    return gsa_chunk(at::silu(q), at::silu(k), at::silu(v), s, g, scale, std::nullopt, std::nullopt, false, cu_seqlens)
        .o;
  }
  return SwishGsaChunkFunction::apply(q, k, v, s, g, scale, cu_seqlens);
}

// The ATen implementations are device-agnostic: registered as CompositeExplicitAutograd they are
// the general path for every backend (CPU now, CUDA until a fused kernel registered under the
// CUDA key takes precedence for the shapes it supports).
TORCH_LIBRARY_IMPL(lintime, CompositeExplicitAutograd, m) {
  m.impl("gsa_chunk_internals_layout", gsa_chunk_internals_layout);
  m.impl("gsa_chunk", gsa_chunk_cpu);
  m.impl("gsa_chunk_bwd", gsa_chunk_bwd_cpu);
  m.impl("gsa_chunk_with_internals", gsa_chunk_with_internals_cpu);
  m.impl("gsa_chunk_bwd_with_internals", gsa_chunk_bwd_with_internals_cpu);
  m.impl("gsa_step", gsa_step_functional);
  m.impl("gsa_step_", gsa_step_inplace);
  m.impl("gsa_step_rows_", gsa_step_rows_inplace);
}

TORCH_LIBRARY_IMPL(lintime, CompositeImplicitAutograd, m) {
  m.impl("gsa_reference", gsa_reference_composite);
  m.impl("abc_gates", abc_gates_composite);
}

TORCH_LIBRARY_IMPL(lintime, Autograd, m) {
  m.impl("gsa_chunk", gsa_chunk_autograd);
}

}  // namespace lintime::ops
