// Dispatcher calls behind ops.h.
#include "ops/register/ops.h"

#include "ops/register/dispatch.h"

namespace lintime::ops {
namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return typed_op<Signature>(name);
}

using OptTensor = const std::optional<at::Tensor>&;
using GlaSignature = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                        const at::Tensor&, const at::Tensor&, bool,
                                                        double, OptTensor, bool, OptTensor);
using GsaSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    double, OptTensor, OptTensor, bool, OptTensor);
using GsaReferenceSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, OptTensor, double,
    OptTensor, OptTensor, bool, OptTensor);

}  // namespace

GlaResult gla_chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& g, bool gate_on_value, double scale, OptTensor initial_state,
                    bool output_final_state, OptTensor cu_seqlens) {
  static auto handle = op<GlaSignature>("lintime::gla_chunk");
  auto [o, final_state] = handle.call(q, k, v, g, gate_on_value, scale, initial_state,
                                      output_final_state, cu_seqlens);
  return {o, final_state};
}

GlaResult gla_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& g, bool gate_on_value, double scale,
                        OptTensor initial_state, bool output_final_state, OptTensor cu_seqlens) {
  static auto handle = op<GlaSignature>("lintime::gla_reference");
  auto [o, final_state] = handle.call(q, k, v, g, gate_on_value, scale, initial_state,
                                      output_final_state, cu_seqlens);
  return {o, final_state};
}

at::Tensor gla_step_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& g, bool gate_on_value, double scale, at::Tensor& state) {
  static auto handle =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                    bool, double, at::Tensor&)>("lintime::gla_step_");
  return handle.call(q, k, v, g, gate_on_value, scale, state);
}

at::Tensor gla_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                   bool gate_on_value, double scale, at::Tensor* state) {
  if (state == nullptr) return gla_chunk(q, k, v, g, gate_on_value, scale).o;
  if (q.size(1) == 1) {
    return gla_step_(q.select(1, 0), k.select(1, 0), v.select(1, 0), g.select(1, 0), gate_on_value, scale, *state)
        .unsqueeze(1);
  }
  GlaResult result = gla_chunk(q, k, v, g, gate_on_value, scale, *state, /*output_final_state=*/true);
  *state = result.final_state;
  return result.o;
}

GsaResult gsa_chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& s, OptTensor g, double scale, OptTensor initial_state_k,
                    OptTensor initial_state_v, bool output_final_state, OptTensor cu_seqlens) {
  static auto handle = op<GsaSignature>("lintime::gsa_chunk");
  at::Tensor slot_write = s, log_gate;
  if (g.has_value()) {
    log_gate = *g;
  } else {
    static auto abc = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, OptTensor)>(
        "lintime::abc_gates");
    std::tie(slot_write, log_gate) = abc.call(s, cu_seqlens);
  }
  auto [o, hk, hv] = handle.call(q, k, v, slot_write, log_gate, scale, initial_state_k,
                                 initial_state_v, output_final_state, cu_seqlens);
  return {o, hk, hv};
}

GsaResult gsa_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& s, OptTensor g, double scale, OptTensor initial_state_k,
                        OptTensor initial_state_v, bool output_final_state, OptTensor cu_seqlens) {
  static auto handle = op<GsaReferenceSignature>("lintime::gsa_reference");
  auto [o, hk, hv] = handle.call(q, k, v, s, g, scale, initial_state_k, initial_state_v,
                                 output_final_state, cu_seqlens);
  return {o, hk, hv};
}

at::Tensor gsa_step_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& s, const at::Tensor& g, double scale, at::Tensor& state_k,
                     at::Tensor& state_v) {
  static auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, double, at::Tensor&,
                                     at::Tensor&)>("lintime::gsa_step_");
  return handle.call(q, k, v, s, g, scale, state_k, state_v);
}

at::Tensor gsa_step_rows_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& s, const at::Tensor& g, double scale, at::Tensor& state_k,
                          at::Tensor& state_v, const at::Tensor& rows) {
  static auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, double, at::Tensor&,
                                     at::Tensor&, const at::Tensor&)>("lintime::gsa_step_rows_");
  return handle.call(q, k, v, s, g, scale, state_k, state_v, rows);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gsa_step(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v, const at::Tensor& s,
                                                        const at::Tensor& g, double scale,
                                                        const at::Tensor& state_k,
                                                        const at::Tensor& state_v) {
  static auto handle = op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      const at::Tensor&, double, const at::Tensor&, const at::Tensor&)>("lintime::gsa_step");
  return handle.call(q, k, v, s, g, scale, state_k, state_v);
}

namespace {
using TaylorSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double, OptTensor, OptTensor, bool, OptTensor);
}  // namespace

TaylorAttentionResult taylor_attention_chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             bool normalize, double eps, OptTensor initial_state,
                                             OptTensor initial_normalizer, bool output_final_state,
                                             OptTensor cu_seqlens) {
  static auto handle = op<TaylorSignature>("lintime::taylor_attention_chunk");
  auto [o, state, normalizer] = handle.call(q, k, v, normalize, eps, initial_state, initial_normalizer,
                                            output_final_state, cu_seqlens);
  return {o, state, normalizer};
}

TaylorAttentionResult taylor_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 bool normalize, double eps, OptTensor initial_state,
                                                 OptTensor initial_normalizer, bool output_final_state,
                                                 OptTensor cu_seqlens) {
  static auto handle = op<TaylorSignature>("lintime::taylor_attention_reference");
  auto [o, state, normalizer] = handle.call(q, k, v, normalize, eps, initial_state, initial_normalizer,
                                            output_final_state, cu_seqlens);
  return {o, state, normalizer};
}

at::Tensor taylor_attention_step_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  bool normalize, double eps, at::Tensor& state, at::Tensor& normalizer) {
  static auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double,
                                     at::Tensor&, at::Tensor&)>("lintime::taylor_attention_step_");
  return handle.call(q, k, v, normalize, eps, state, normalizer);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> taylor_attention_step(const at::Tensor& q, const at::Tensor& k,
                                                                     const at::Tensor& v, bool normalize,
                                                                     double eps, const at::Tensor& state,
                                                                     const at::Tensor& normalizer) {
  static auto handle = op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, double, const at::Tensor&,
      const at::Tensor&)>("lintime::taylor_attention_step");
  return handle.call(q, k, v, normalize, eps, state, normalizer);
}

at::Tensor sliding_window_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                                    double scale, OptTensor cu_seqlens) {
  static auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double,
                                     OptTensor)>("lintime::sliding_window_attention");
  return handle.call(q, k, v, window, scale, cu_seqlens);
}

at::Tensor sliding_window_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              int64_t window, double scale, OptTensor cu_seqlens) {
  static auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double,
                                     OptTensor)>("lintime::sliding_window_attention_reference");
  return handle.call(q, k, v, window, scale, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_cache_from_prefill(const at::Tensor& k,
                                                                                 const at::Tensor& v,
                                                                                 int64_t window) {
  static auto handle = op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                         int64_t)>(
      "lintime::sliding_window_cache_from_prefill");
  return handle.call(k, v, window);
}

at::Tensor sliding_window_attention_step_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          int64_t window, double scale, at::Tensor& key_cache,
                                          at::Tensor& value_cache, at::Tensor& positions) {
  static auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double,
                                     at::Tensor&, at::Tensor&, at::Tensor&)>("lintime::sliding_window_attention_step_");
  return handle.call(q, k, v, window, scale, key_cache, value_cache, positions);
}

std::tuple<at::Tensor, at::Tensor> short_convolution(const at::Tensor& x, const at::Tensor& weight, OptTensor bias,
                                                     bool silu, OptTensor initial_state, bool output_final_state,
                                                     OptTensor cu_seqlens) {
  static auto handle = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, OptTensor, bool,
                                                             OptTensor, bool, OptTensor)>("lintime::short_convolution");
  return handle.call(x, weight, bias, silu, initial_state, output_final_state, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor> short_convolution_reference(const at::Tensor& x, const at::Tensor& weight,
                                                               OptTensor bias, bool silu, OptTensor initial_state,
                                                               bool output_final_state, OptTensor cu_seqlens) {
  static auto handle = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, OptTensor, bool,
                                                             OptTensor, bool, OptTensor)>(
      "lintime::short_convolution_reference");
  return handle.call(x, weight, bias, silu, initial_state, output_final_state, cu_seqlens);
}

at::Tensor short_convolution_step_(const at::Tensor& x, const at::Tensor& weight, OptTensor bias, bool silu,
                                   at::Tensor& state) {
  static auto handle =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, OptTensor, bool, at::Tensor&)>("lintime::short_convolution_step_");
  return handle.call(x, weight, bias, silu, state);
}

}  // namespace lintime::ops
