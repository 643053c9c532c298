// Taylor linear attention, chunked form (training, prefill): within a chunk of 64 tokens the
// quadratic form A_ts = 1 + s_ts + s_ts²/2 (s = q·k/√D, s ≤ t; φ is not materialised for it),
// across chunks the states S = Σ φ(k) vᵀ and z = Σ φ(k), read through φ(q) of the chunk's
// queries. With one chunk spanning the sequence and no initial state this is the parallel
// (attention-like) form. Differentiable ATen ops: autograd gives the gradients.
#include "ops/based/taylor_attention.h"

#include "ops/based/taylor_attention_common.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lintime::ops {
namespace {

constexpr int64_t kChunk = 64;

}  // namespace

TaylorOutputs taylor_attention_chunk_fwd(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v, bool normalize, double eps,
                                         const at::Tensor& initial_state,
                                         const at::Tensor& initial_normalizer,
                                         bool output_final_state, const at::Tensor& cu_seqlens) {
  taylor_attention_check_inputs("lintime::taylor_attention_chunk", q, k, v, eps, initial_state,
                                initial_normalizer, cu_seqlens);
  auto chunked = [&](const at::Tensor& qs, const at::Tensor& ks, const at::Tensor& vs,
                     at::Tensor state, at::Tensor normalizer) -> TaylorOutputs {
    const int64_t batch = qs.size(0), length = qs.size(1), heads = qs.size(2), value_dim = vs.size(3);
    const double root = std::sqrt(static_cast<double>(qs.size(3)));
    const at::Tensor queries = qs.transpose(1, 2), keys = ks.transpose(1, 2);  // [B,H,T,D]
    const at::Tensor values = vs.transpose(1, 2);                                // [B,H,T,V]
    std::vector<at::Tensor> outputs;
    for (int64_t start = 0; start < length; start += kChunk) {
      const int64_t size = std::min(kChunk, length - start);
      const at::Tensor query = queries.narrow(2, start, size), key = keys.narrow(2, start, size);
      const at::Tensor value = values.narrow(2, start, size);
      const at::Tensor score = at::matmul(query, key.transpose(-1, -2)) / root;  // [B,H,C,C]
      const at::Tensor causal = at::ones({size, size}, score.options()).tril();
      const at::Tensor weight = (1 + score + score * score / 2) * causal;        // φ(q_t)·φ(k_s), s ≤ t
      const at::Tensor query_features = taylor_feature_map(query);               // [B,H,C,E]
      const at::Tensor numerator = at::matmul(weight, value) + at::matmul(query_features, state);
      const at::Tensor denominator =
          weight.sum(-1) + at::matmul(query_features, normalizer.unsqueeze(-1)).squeeze(-1);
      outputs.push_back(taylor::read_out(numerator, denominator, normalize, eps));  // [B,H,C,V]
      const at::Tensor key_features = taylor_feature_map(key);                    // [B,H,C,E]
      state = state + at::matmul(key_features.transpose(-1, -2), value);
      normalizer = normalizer + key_features.sum(2);
    }
    at::Tensor o = length > 0 ? at::cat(outputs, 2).transpose(1, 2)
                              : at::zeros({batch, 0, heads, value_dim}, qs.options());
    return {o, state, normalizer};
  };
  return taylor::run_per_sequence(q, k, v, initial_state, initial_normalizer, output_final_state,
                                  cu_seqlens, chunked);
}

}  // namespace lintime::ops
