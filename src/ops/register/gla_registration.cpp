// Registers the GLA implementations for lintime's schemas (schemas.cpp): CPU kernels for the
// chunked forward/backward and the step, the reference as CompositeImplicitAutograd (autograd
// differentiates its ATen ops), and an Autograd kernel for gla_chunk whose backward calls the
// registered gla_chunk_bwd op through the dispatcher, so other backends plug in unchanged.
#include "ops/gla/gla.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>

namespace lintime::ops {
namespace {

using OptionalTensor = std::optional<at::Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor or_undefined(const OptionalTensor& tensor) {
  return tensor.has_value() ? *tensor : at::Tensor();
}

OptionalTensor defined_or_none(const at::Tensor& tensor) {
  return tensor.defined() ? OptionalTensor(tensor) : std::nullopt;
}

std::tuple<at::Tensor, at::Tensor> gla_chunk_cpu(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, const at::Tensor& g,
                                                 bool gate_on_value, double scale,
                                                 const OptionalTensor& initial_state,
                                                 bool output_final_state,
                                                 const OptionalTensor& cu_seqlens) {
  return gla_chunk_fwd(q, k, v, g, gate_on_value, scale, or_undefined(initial_state),
                       output_final_state, or_undefined(cu_seqlens));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gla_chunk_bwd_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const OptionalTensor& initial_state,
    const OptionalTensor& cu_seqlens, const at::Tensor& grad_o,
    const OptionalTensor& grad_final_state) {
  return gla_chunk_bwd(q, k, v, g, gate_on_value, scale, or_undefined(initial_state),
                       or_undefined(cu_seqlens), grad_o, or_undefined(grad_final_state));
}

std::tuple<at::Tensor, at::Tensor> gla_reference_composite(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const OptionalTensor& initial_state,
    bool output_final_state, const OptionalTensor& cu_seqlens) {
  return gla_reference_fwd(q, k, v, g, gate_on_value, scale, or_undefined(initial_state),
                           output_final_state, or_undefined(cu_seqlens));
}

std::tuple<at::Tensor, at::Tensor> gla_step_cpu(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const at::Tensor& g,
                                                bool gate_on_value, double scale,
                                                const at::Tensor& state) {
  return gla_step(q, k, v, g, gate_on_value, scale, state);
}

at::Tensor gla_step_inplace_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& g, bool gate_on_value, double scale,
                                at::Tensor& state) {
  return gla_step_inplace(q, k, v, g, gate_on_value, scale, state);
}

using GlaChunkSignature = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double,
    const OptionalTensor&, bool, const OptionalTensor&);
using GlaChunkBackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double,
    const OptionalTensor&, const OptionalTensor&, const at::Tensor&, const OptionalTensor&);

class GlaChunkFunction : public torch::autograd::Function<GlaChunkFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const at::Tensor& g, bool gate_on_value,
                               double scale, const OptionalTensor& initial_state,
                               bool output_final_state, const OptionalTensor& cu_seqlens) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto handle = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lintime::gla_chunk", "")
                             .typed<GlaChunkSignature>();
    auto [o, final_state] = handle.call(q, k, v, g, gate_on_value, scale, initial_state,
                                        output_final_state, cu_seqlens);
    ctx->save_for_backward({q, k, v, g, or_undefined(initial_state), or_undefined(cu_seqlens)});
    ctx->saved_data["gate_on_value"] = gate_on_value;
    ctx->saved_data["scale"] = scale;
    // Autograd cannot wrap an undefined output: an unrequested final state is left out here
    // and restored as undefined by gla_chunk_autograd.
    if (!output_final_state) return {o};
    return {o, final_state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto handle = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("lintime::gla_chunk_bwd", "")
                             .typed<GlaChunkBackwardSignature>();
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &g = saved[3];
    const at::Tensor &initial_state = saved[4], &cu_seqlens = saved[5];
    at::Tensor grad_o = grads[0];
    if (!grad_o.defined()) {
      grad_o = at::zeros({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
    }
    auto [grad_q, grad_k, grad_v, grad_g, grad_initial] =
        handle.call(q, k, v, g, ctx->saved_data["gate_on_value"].toBool(),
                    ctx->saved_data["scale"].toDouble(), defined_or_none(initial_state),
                    defined_or_none(cu_seqlens), grad_o,
                    grads.size() > 1 ? defined_or_none(grads[1]) : std::nullopt);
    return {grad_q, grad_k, grad_v, grad_g, at::Tensor(), at::Tensor(),
            initial_state.defined() ? grad_initial : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> gla_chunk_autograd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const OptionalTensor& initial_state,
    bool output_final_state, const OptionalTensor& cu_seqlens) {
  variable_list outputs = GlaChunkFunction::apply(q, k, v, g, gate_on_value, scale, initial_state,
                                                  output_final_state, cu_seqlens);
  return {outputs[0], outputs.size() > 1 ? outputs[1] : at::Tensor()};
}

}  // namespace

// The ATen implementations are device-agnostic: registered as CompositeExplicitAutograd they are
// the general path for every backend (CPU now, CUDA until a fused kernel registered under the
// CUDA key takes precedence for the shapes it supports).
TORCH_LIBRARY_IMPL(lintime, CompositeExplicitAutograd, m) {
  m.impl("gla_chunk", &gla_chunk_cpu);
  m.impl("gla_chunk_bwd", &gla_chunk_bwd_cpu);
  m.impl("gla_step", &gla_step_cpu);
  m.impl("gla_step_", &gla_step_inplace_cpu);
}

TORCH_LIBRARY_IMPL(lintime, CompositeImplicitAutograd, m) {
  m.impl("gla_reference", &gla_reference_composite);
}

TORCH_LIBRARY_IMPL(lintime, Autograd, m) {
  m.impl("gla_chunk", &gla_chunk_autograd);
}

}  // namespace lintime::ops
