// GLA decoding: one token of the recurrence in gla.h, functional and in place. The state is
// read and written once per step (memory-bound); computation in the compute dtype.
#include "ops/gla/gla.h"

#include <ATen/ATen.h>

namespace lintime::ops {
namespace {

// q [B,HQ,K], k [B,H,K], v [B,H,V], g [B,H,K|V], state [B,H,K,V] (compute dtype).
// Returns (o [B,HQ,V] compute dtype, new state).
std::pair<at::Tensor, at::Tensor> step(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const at::Tensor& g,
                                       bool gate_on_value, double scale,
                                       const at::Tensor& state) {
  const int64_t batch = q.size(0), query_heads = q.size(1), key_dim = q.size(2);
  const int64_t heads = k.size(1), value_dim = v.size(2);
  at::Tensor alpha = g.exp();
  at::Tensor decay = gate_on_value ? alpha.unsqueeze(2) : alpha.unsqueeze(3);
  at::Tensor new_state = state * decay + k.unsqueeze(3) * v.unsqueeze(2);       // [B,H,K,V]
  at::Tensor query = q.reshape({batch, heads, query_heads / heads, key_dim});     // [B,H,G,K]
  at::Tensor o = (at::matmul(query, new_state) * scale).reshape({batch, query_heads, value_dim});
  return {o, new_state};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gla_step(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const at::Tensor& g,
                                            bool gate_on_value, double scale,
                                            const at::Tensor& state) {
  gla_step_check_inputs("lintime::gla_step", q, k, v, g, gate_on_value, state);
  const at::ScalarType dtype = gla_compute_dtype(q, k, v, g);
  auto [o, new_state] = step(q.to(dtype), k.to(dtype), v.to(dtype), g.to(dtype), gate_on_value,
                             scale, state.to(dtype));
  return {o.to(q.scalar_type()), new_state};
}

at::Tensor gla_step_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& g, bool gate_on_value, double scale,
                            at::Tensor& state) {
  gla_step_check_inputs("lintime::gla_step_", q, k, v, g, gate_on_value, state);
  const at::ScalarType dtype = gla_compute_dtype(q, k, v, g);
  auto [o, new_state] = step(q.to(dtype), k.to(dtype), v.to(dtype), g.to(dtype), gate_on_value,
                             scale, state.to(dtype));
  state.copy_(new_state);
  return o.to(q.scalar_type());
}

}  // namespace lintime::ops
