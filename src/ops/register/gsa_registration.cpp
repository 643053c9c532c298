// Registers the GSA implementations for the schemas in schemas.cpp: CPU kernels for gsa_chunk,
// gsa_chunk_bwd, gsa_step and gsa_step_; CompositeImplicitAutograd for gsa_reference and
// abc_gates (autograd differentiates their ATen ops); and an Autograd kernel for gsa_chunk whose
// backward is the analytic gsa_chunk_bwd, called through the dispatcher.
#include "ops/gsa/gsa.h"

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

// Autograd for gsa_chunk: forward runs the backend kernel below autograd, backward calls the
// registered gsa_chunk_bwd (so a CUDA backward registered later is picked up the same way). When
// a gradient will be taken, the forward goes through gsa_chunk_with_internals and the backward
// through gsa_chunk_bwd_with_internals, so that the fused kernels' backward does not recompute
// what the forward computed.
class GsaChunkFunction : public torch::autograd::Function<GsaChunkFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
      const at::Tensor& v, const at::Tensor& s, const at::Tensor& g, double scale,
      const OptionalTensor& initial_state_k, const OptionalTensor& initial_state_v,
      bool output_final_state, const OptionalTensor& cu_seqlens, bool keep_internals) {
    static auto forward_op = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("lintime::gsa_chunk", "")
                                 .typed<decltype(gsa_chunk_cpu)>();
    static auto forward_with_internals_op = c10::Dispatcher::singleton()
                                                .findSchemaOrThrow("lintime::gsa_chunk_with_internals", "")
                                                .typed<decltype(gsa_chunk_with_internals_cpu)>();
    Tensors3 outputs;
    std::vector<at::Tensor> internals;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      if (keep_internals) {
        auto [o, final_state_k, final_state_v, kept] = forward_with_internals_op.call(
            q, k, v, s, g, scale, initial_state_k, initial_state_v, output_final_state, cu_seqlens);
        outputs = {o, final_state_k, final_state_v};
        internals = std::move(kept);
      } else {
        outputs = forward_op.call(q, k, v, s, g, scale, initial_state_k, initial_state_v,
                                  output_final_state, cu_seqlens);
      }
    }
    std::vector<at::Tensor> saved = {q, k, v, s, g, value_or_undefined(initial_state_k),
                                     value_or_undefined(initial_state_v), value_or_undefined(cu_seqlens)};
    saved.insert(saved.end(), internals.begin(), internals.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["scale"] = scale;
    ctx->set_materialize_grads(false);
    auto& [o, final_state_k, final_state_v] = outputs;
    if (output_final_state) return {o, final_state_k, final_state_v};
    // A custom Function cannot return undefined tensors: stand-ins that gsa_chunk_autograd
    // turns back into undefined ones.
    auto no_state_k = at::empty({0}, o.options()), no_state_v = at::empty({0}, o.options());
    ctx->mark_non_differentiable({no_state_k, no_state_v});
    return {o, no_state_k, no_state_v};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    static auto backward_op = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow("lintime::gsa_chunk_bwd", "")
                                  .typed<decltype(gsa_chunk_bwd_cpu)>();
    static auto backward_with_internals_op = c10::Dispatcher::singleton()
                                                 .findSchemaOrThrow("lintime::gsa_chunk_bwd_with_internals", "")
                                                 .typed<decltype(gsa_chunk_bwd_with_internals_cpu)>();
    const auto saved = ctx->get_saved_variables();
    constexpr size_t kInputs = 8;  // q, k, v, s, g, both initial states, cu_seqlens; then internals
    const auto& q = saved[0];
    const auto& v = saved[2];
    at::Tensor grad_o = grad_outputs[0];
    if (!grad_o.defined()) {
      grad_o = at::zeros({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
    }
    const double scale = ctx->saved_data["scale"].toDouble();
    auto [grad_q, grad_k, grad_v, grad_s, grad_g, grad_initial_state_k, grad_initial_state_v] =
        saved.size() > kInputs
            ? backward_with_internals_op.call(
                  saved[0], saved[1], saved[2], saved[3], saved[4], scale, defined_or_nullopt(saved[5]),
                  defined_or_nullopt(saved[6]), defined_or_nullopt(saved[7]), grad_o,
                  defined_or_nullopt(grad_outputs[1]), defined_or_nullopt(grad_outputs[2]),
                  at::TensorList(saved).slice(kInputs))
            : backward_op.call(saved[0], saved[1], saved[2], saved[3], saved[4], scale,
                               defined_or_nullopt(saved[5]), defined_or_nullopt(saved[6]),
                               defined_or_nullopt(saved[7]), grad_o,
                               defined_or_nullopt(grad_outputs[1]), defined_or_nullopt(grad_outputs[2]));
    // One gradient per forward argument; non-tensor and absent arguments get undefined ones.
    return {grad_q, grad_k, grad_v, grad_s, grad_g, at::Tensor(), grad_initial_state_k,
            grad_initial_state_v, at::Tensor(), at::Tensor(), at::Tensor()};
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
