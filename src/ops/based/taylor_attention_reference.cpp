// Taylor linear attention reference: the recurrence of taylor_attention.h one token at a time,
// with φ materialised, in differentiable out-of-place ATen ops (autograd gives the reference
// gradients). Also φ itself.
#include "ops/based/taylor_attention.h"

#include "ops/based/taylor_attention_common.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

namespace lintime::ops {

at::Tensor taylor_feature_map(const at::Tensor& x) {
  const double feature_dim = static_cast<double>(x.size(-1));
  const at::Tensor constant = at::ones_like(x.narrow(-1, 0, 1));
  const at::Tensor linear = x / std::pow(feature_dim, 0.25);
  const at::Tensor quadratic =
      (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (std::sqrt(2.0) * std::sqrt(feature_dim));
  return at::cat({constant, linear, quadratic}, -1);
}

TaylorOutputs taylor_attention_reference_fwd(const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& v, bool normalize, double eps,
                                             const at::Tensor& initial_state,
                                             const at::Tensor& initial_normalizer,
                                             bool output_final_state, const at::Tensor& cu_seqlens) {
  taylor_attention_check_inputs("lintime::taylor_attention_reference", q, k, v, eps, initial_state,
                                initial_normalizer, cu_seqlens);
  // B sequences of equal length: q, k [B,T,H,D], v [B,T,H,V], S [B,H,E,V], z [B,H,E].
  auto recurrence = [&](const at::Tensor& qs, const at::Tensor& ks, const at::Tensor& vs,
                        at::Tensor state, at::Tensor normalizer) -> TaylorOutputs {
    const int64_t batch = qs.size(0), length = qs.size(1), heads = qs.size(2), value_dim = vs.size(3);
    std::vector<at::Tensor> outputs;
    for (int64_t t = 0; t < length; ++t) {
      const at::Tensor key_features = taylor_feature_map(ks.select(1, t));    // [B,H,E]
      const at::Tensor query_features = taylor_feature_map(qs.select(1, t));  // [B,H,E]
      state = state + key_features.unsqueeze(-1) * vs.select(1, t).unsqueeze(-2);
      normalizer = normalizer + key_features;
      const at::Tensor numerator = at::matmul(query_features.unsqueeze(-2), state).squeeze(-2);  // [B,H,V]
      const at::Tensor denominator = (query_features * normalizer).sum(-1);                      // [B,H]
      outputs.push_back(taylor::read_out(numerator, denominator, normalize, eps));
    }
    at::Tensor o = length > 0 ? at::stack(outputs, 1) : at::zeros({batch, 0, heads, value_dim}, qs.options());
    return {o, state, normalizer};
  };
  return taylor::run_per_sequence(q, k, v, initial_state, initial_normalizer, output_final_state,
                                  cu_seqlens, recurrence);
}

}  // namespace lintime::ops
