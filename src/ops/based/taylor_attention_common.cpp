// The pieces every Taylor linear attention form shares (taylor_attention_common.h).
#include "ops/based/taylor_attention_common.h"

#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <vector>

namespace lintime::ops {
namespace taylor {

at::ScalarType compute_dtype_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (const at::Tensor* x : {&q, &k, &v}) {
    if (x->scalar_type() == at::kDouble) return at::kDouble;
  }
  return at::kFloat;
}

TaylorOutputs run_per_sequence(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& initial_state, const at::Tensor& initial_normalizer,
                               bool output_final_state, const at::Tensor& cu_seqlens,
                               const SequenceForm& form) {
  const at::ScalarType dtype = compute_dtype_of(q, k, v);
  const at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype);
  const int64_t batch = k.size(0), heads = k.size(2), value_dim = v.size(3);
  const int64_t features = taylor_feature_count(k.size(3));
  const std::vector<int64_t> offsets =
      cu_seqlens.defined() ? sequence_offsets(cu_seqlens) : std::vector<int64_t>();
  const int64_t sequences = cu_seqlens.defined() ? static_cast<int64_t>(offsets.size()) - 1 : batch;
  const at::Tensor state0 = initial_state.defined() ? initial_state.to(dtype)
                                                    : at::zeros({sequences, heads, features, value_dim}, qc.options());
  const at::Tensor normalizer0 = initial_normalizer.defined() ? initial_normalizer.to(dtype)
                                                              : at::zeros({sequences, heads, features}, qc.options());
  at::Tensor o, state, normalizer;
  if (!cu_seqlens.defined()) {
    std::tie(o, state, normalizer) = form(qc, kc, vc, state0, normalizer0);
  } else {
    std::vector<at::Tensor> outputs, states, normalizers;
    for (int64_t n = 0; n < sequences; ++n) {
      const int64_t start = offsets[n], end = offsets[n + 1];
      auto [o_n, state_n, normalizer_n] =
          form(qc.slice(1, start, end), kc.slice(1, start, end), vc.slice(1, start, end),
               state0.slice(0, n, n + 1), normalizer0.slice(0, n, n + 1));
      outputs.push_back(o_n);
      states.push_back(state_n);
      normalizers.push_back(normalizer_n);
    }
    o = at::cat(outputs, 1);
    state = at::cat(states, 0);
    normalizer = at::cat(normalizers, 0);
  }
  if (!output_final_state) return {o.to(q.scalar_type()), at::Tensor(), at::Tensor()};
  return {o.to(q.scalar_type()), state, normalizer};
}

at::Tensor read_out(const at::Tensor& numerator, const at::Tensor& denominator, bool normalize, double eps) {
  return normalize ? numerator / (denominator.unsqueeze(-1) + eps) : numerator;
}

}  // namespace taylor

}  // namespace lintime::ops
