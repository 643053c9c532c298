// GLA reference: the recurrence of gla.h one token at a time, written in differentiable,
// out-of-place ATen ops so that autograd through it yields the reference gradients.
#include "ops/gla/gla.h"

#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <vector>

namespace lintime::ops {
namespace {

// Runs B sequences of equal length from `state` [B,H,K,V] (compute dtype).
// q [B,T,HQ,K], k [B,T,H,K], v [B,T,H,V], g [B,T,H,K|V], all in the compute dtype.
// Returns (o [B,T,HQ,V] compute dtype, final state [B,H,K,V]).
std::pair<at::Tensor, at::Tensor> run_recurrence(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, const at::Tensor& g,
                                                 bool gate_on_value, double scale,
                                                 at::Tensor state) {
  const int64_t batch = q.size(0), length = q.size(1), query_heads = q.size(2);
  const int64_t key_dim = q.size(3), heads = k.size(2), value_dim = v.size(3);
  const int64_t groups = query_heads / heads;
  std::vector<at::Tensor> outputs;
  outputs.reserve(length);
  for (int64_t t = 0; t < length; ++t) {
    at::Tensor alpha = g.select(1, t).exp();                             // [B,H,K|V]
    at::Tensor decay = gate_on_value ? alpha.unsqueeze(2) : alpha.unsqueeze(3);
    at::Tensor outer = k.select(1, t).unsqueeze(3) * v.select(1, t).unsqueeze(2);  // [B,H,K,V]
    state = state * decay + outer;
    at::Tensor query = q.select(1, t).reshape({batch, heads, groups, key_dim});
    at::Tensor output = at::matmul(query, state) * scale;               // [B,H,G,V]
    outputs.push_back(output.reshape({batch, query_heads, value_dim}));
  }
  at::Tensor o = length > 0 ? at::stack(outputs, 1)
                            : at::zeros({batch, 0, query_heads, value_dim}, q.options());
  return {o, state};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gla_reference_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const at::Tensor& initial_state, bool output_final_state,
    const at::Tensor& cu_seqlens) {
  gla_check_inputs("lintime::gla_reference", q, k, v, g, gate_on_value, initial_state, cu_seqlens);
  const at::ScalarType dtype = gla_compute_dtype(q, k, v, g);
  at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype), gc = g.to(dtype);
  const int64_t batch = k.size(0), heads = k.size(2), key_dim = k.size(3), value_dim = v.size(3);

  const std::vector<int64_t> offsets =
      cu_seqlens.defined() ? sequence_offsets(cu_seqlens) : std::vector<int64_t>();
  const int64_t sequences = cu_seqlens.defined() ? static_cast<int64_t>(offsets.size()) - 1 : batch;
  at::Tensor state0 = initial_state.defined()
                          ? initial_state.to(dtype)
                          : at::zeros({sequences, heads, key_dim, value_dim}, qc.options());

  at::Tensor o, final_state;
  if (!cu_seqlens.defined()) {
    std::tie(o, final_state) = run_recurrence(qc, kc, vc, gc, gate_on_value, scale, state0);
  } else {
    std::vector<at::Tensor> outputs, finals;
    for (int64_t i = 0; i < sequences; ++i) {
      const int64_t start = offsets[i], end = offsets[i + 1];
      auto [o_i, final_i] = run_recurrence(
          qc.slice(1, start, end), kc.slice(1, start, end), vc.slice(1, start, end),
          gc.slice(1, start, end), gate_on_value, scale, state0.slice(0, i, i + 1));
      outputs.push_back(o_i);
      finals.push_back(final_i);
    }
    o = at::cat(outputs, 1);
    final_state = at::cat(finals, 0);
  }
  return {o.to(q.scalar_type()), output_final_state ? final_state : at::Tensor()};
}

}  // namespace lintime::ops
