// GSA reference: the two-pass recurrence of gsa.md §1 token by token in differentiable ATen ops
// (autograd gives its gradients). Slow and plain on purpose: the chunked form and the step are
// tested against it. g undefined selects ABC, whose gates are computed here as a running
// z_t = logaddexp(z_{t-1}, s̃_t), independently of abc_gates.
#include "ops/gsa/gsa.h"

#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <vector>

namespace lintime::ops {
namespace {

struct SequenceResult {
  at::Tensor o;        // [b, L, HQ, V] in the compute dtype
  at::Tensor state_k;  // [b, H, K, M]
  at::Tensor state_v;  // [b, H, M, V]
};

// Runs the recurrence over L tokens of b independent rows that start from the given states.
// q [b,L,HQ,K], k [b,L,H,K], v [b,L,H,V], s and g [b,L,H,M] (g undefined: ABC, s = logits).
SequenceResult run_recurrence(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& s, const at::Tensor& g, double scale,
                              at::Tensor state_k, at::Tensor state_v) {
  const int64_t rows = q.size(0), length = q.size(1), query_heads = q.size(2);
  const int64_t key_dim = q.size(3), heads = k.size(2), value_dim = v.size(3);
  const int64_t group = query_heads / heads;
  const auto query = q.reshape({rows, length, heads, group, key_dim});  // [b, L, H, G, K]

  at::Tensor running_log_normaliser;  // ABC: z_{t-1} [b, H, M]
  std::vector<at::Tensor> outputs;
  outputs.reserve(length);
  for (int64_t t = 0; t < length; ++t) {
    const auto q_t = query.select(1, t);  // [b, H, G, K]
    const auto k_t = k.select(1, t);      // [b, H, K]
    const auto v_t = v.select(1, t);      // [b, H, V]
    at::Tensor write, decay;              // s_t and alpha_t, [b, H, M]; decay undefined = 1
    if (g.defined()) {
      write = s.select(1, t);
      decay = g.select(1, t).exp();
    } else {
      const auto logits_t = s.select(1, t);
      if (t == 0) {
        running_log_normaliser = logits_t;
      } else {
        const auto next = at::logaddexp(running_log_normaliser, logits_t);
        decay = (running_log_normaliser - next).exp();
        running_log_normaliser = next;
      }
      write = (logits_t - running_log_normaliser).exp();
    }
    // Pass 1: H^k_t = H^k_{t-1} Diag(alpha_t) + k_t s_tᵀ; ok_t = scale q_tᵀ H^k_t; p = softmax.
    if (decay.defined()) state_k = state_k * decay.unsqueeze(2);
    state_k = state_k + k_t.unsqueeze(3) * write.unsqueeze(2);   // [b, H, K, M]
    const auto slot_scores = at::matmul(q_t, state_k) * scale;   // [b, H, G, M]
    const auto slot_weights = at::softmax(slot_scores, -1);
    // Pass 2: H^v_t = Diag(alpha_t) H^v_{t-1} + s_t v_tᵀ; o_t = p_tᵀ H^v_t.
    if (decay.defined()) state_v = state_v * decay.unsqueeze(3);
    state_v = state_v + write.unsqueeze(3) * v_t.unsqueeze(2);   // [b, H, M, V]
    outputs.push_back(at::matmul(slot_weights, state_v).reshape({rows, query_heads, value_dim}));
  }
  at::Tensor o = length > 0 ? at::stack(outputs, 1)
                            : at::zeros({rows, 0, query_heads, value_dim}, q.options());
  return {o, state_k, state_v};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> gsa_reference_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const at::Tensor& initial_state_k,
    const at::Tensor& initial_state_v, bool output_final_state, const at::Tensor& cu_seqlens) {
  gsa_check_inputs("lintime::gsa_reference", q, k, v, s, g, initial_state_k, initial_state_v,
                   cu_seqlens);
  const auto options = q.options().dtype(compute_dtype(q.scalar_type()));
  const int64_t batch = q.size(0), heads = k.size(2), key_dim = q.size(3);
  const int64_t value_dim = v.size(3), slots = s.size(3);
  const auto qc = q.to(options), kc = k.to(options), vc = v.to(options), sc = s.to(options);
  const auto gc = g.defined() ? g.to(options) : at::Tensor();

  // Rows that run together: the whole batch, or one packed sequence at a time.
  std::vector<int64_t> offsets{0, q.size(1)};
  int64_t rows = batch;
  if (cu_seqlens.defined()) {
    offsets = sequence_offsets(cu_seqlens);
    rows = 1;
  }
  const int64_t sequences = static_cast<int64_t>(offsets.size()) - 1;
  std::vector<at::Tensor> outputs, states_k, states_v;
  for (int64_t n = 0; n < sequences; ++n) {
    const int64_t start = offsets[n], length = offsets[n + 1] - offsets[n];
    const int64_t first_row = cu_seqlens.defined() ? n : 0;
    auto state_k = initial_state_k.defined()
                       ? initial_state_k.narrow(0, first_row, rows).to(options)
                       : at::zeros({rows, heads, key_dim, slots}, options);
    auto state_v = initial_state_v.defined()
                       ? initial_state_v.narrow(0, first_row, rows).to(options)
                       : at::zeros({rows, heads, slots, value_dim}, options);
    auto slice = [&](const at::Tensor& x) {
      return x.defined() ? x.narrow(1, start, length) : at::Tensor();
    };
    auto result = run_recurrence(slice(qc), slice(kc), slice(vc), slice(sc), slice(gc), scale,
                                 state_k, state_v);
    outputs.push_back(result.o);
    states_k.push_back(result.state_k);
    states_v.push_back(result.state_v);
  }
  at::Tensor o = (sequences == 1 ? outputs[0] : at::cat(outputs, 1)).to(q.scalar_type());
  if (!output_final_state) return {o, at::Tensor(), at::Tensor()};
  return {o, sequences == 1 ? states_k[0] : at::cat(states_k, 0),
          sequences == 1 ? states_v[0] : at::cat(states_v, 0)};
}

}  // namespace lintime::ops
