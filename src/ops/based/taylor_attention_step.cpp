// Taylor linear attention, one token (decoding): S += φ(k) vᵀ, z += φ(k), o = φ(q)ᵀ S (/ φ(q)·z).
// The functional form returns new states; the in-place form writes them into the given ones.
#include "ops/based/taylor_attention.h"

#include "ops/based/taylor_attention_common.h"

#include <ATen/ATen.h>

namespace lintime::ops {

TaylorOutputs taylor_attention_step_functional(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    bool normalize, double eps, const at::Tensor& state,
                                    const at::Tensor& normalizer) {
  taylor_attention_step_check_inputs("lintime::taylor_attention_step", q, k, v, eps, state, normalizer);
  const at::ScalarType dtype = state.scalar_type() == at::kDouble ? at::kDouble : taylor::compute_dtype_of(q, k, v);
  const at::Tensor key_features = taylor_feature_map(k.to(dtype));      // [B,H,E]
  const at::Tensor query_features = taylor_feature_map(q.to(dtype));    // [B,H,E]
  const at::Tensor new_state = state.to(dtype) + key_features.unsqueeze(-1) * v.to(dtype).unsqueeze(-2);
  const at::Tensor new_normalizer = normalizer.to(dtype) + key_features;
  const at::Tensor numerator = at::matmul(query_features.unsqueeze(-2), new_state).squeeze(-2);  // [B,H,V]
  const at::Tensor denominator = (query_features * new_normalizer).sum(-1);                      // [B,H]
  const at::Tensor o = taylor::read_out(numerator, denominator, normalize, eps);
  return {o.to(q.scalar_type()), new_state.to(state.scalar_type()), new_normalizer.to(normalizer.scalar_type())};
}

at::Tensor taylor_attention_step_inplace(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v, bool normalize, double eps,
                                         at::Tensor& state, at::Tensor& normalizer) {
  auto [o, new_state, new_normalizer] = taylor_attention_step_functional(q, k, v, normalize, eps, state, normalizer);
  state.copy_(new_state);
  normalizer.copy_(new_normalizer);
  return o;
}

}  // namespace lintime::ops
