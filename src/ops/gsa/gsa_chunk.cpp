// Chunked GSA (training, prefill): two passes of the chunked GLA core joined by a softmax over
// the M slots (gsa.md §2). Pass 1 is GLA with the gate on its value side (values = s), pass 2
// GLA with the gate on its key side (queries = p, keys = s). The backward recomputes the
// pass-1 output and the softmax, backpropagates pass 2, the softmax and pass 1, and sums the
// two passes' contributions to ds and dg. Derivation: README.md in this folder.
#include "ops/gsa/gsa.h"

#include "core/tensor_checks.h"
#include "ops/gla/gla.h"

#include <ATen/ATen.h>

namespace lintime::ops {
namespace {

constexpr const char* kForwardOp = "lintime::gsa_chunk";
constexpr const char* kBackwardOp = "lintime::gsa_chunk_bwd";

struct SlotWeights {
  at::Tensor probabilities;  // p = softmax(ok) over M [B, T, HQ, M] in the compute dtype
  at::Tensor pass_2_query;   // p as pass 2 reads it: cast to q's dtype for fp16/bf16 inputs
};

// Pass 1 and the softmax: ok_t = scale q_tᵀ H^k_t, p_t = softmax(ok_t).
std::pair<SlotWeights, at::Tensor> slot_weights(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& s, const at::Tensor& g,
                                                double scale, const at::Tensor& initial_state_k,
                                                bool output_final_state,
                                                const at::Tensor& cu_seqlens) {
  auto [slot_scores, final_state_k] = gla_chunk_fwd(q, k, s, g, /*gate_on_value=*/true, scale,
                                                    initial_state_k, output_final_state,
                                                    cu_seqlens);  // ok [B, T, HQ, M]
  const auto dtype = compute_dtype(q.scalar_type());
  auto probabilities = at::softmax(slot_scores.to(dtype), -1);
  auto pass_2_query = probabilities.to(q.scalar_type());
  return {{probabilities, pass_2_query}, final_state_k};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> gsa_chunk_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const at::Tensor& initial_state_k,
    const at::Tensor& initial_state_v, bool output_final_state, const at::Tensor& cu_seqlens) {
  TORCH_CHECK(g.defined(), kForwardOp, ": g is missing; expected shape [B, T, H, M] "
              "(ABC gates come from abc_gates)");
  gsa_check_inputs(kForwardOp, q, k, v, s, g, initial_state_k, initial_state_v, cu_seqlens);
  auto [weights, final_state_k] = slot_weights(q, k, s, g, scale, initial_state_k,
                                               output_final_state, cu_seqlens);
  auto [o, final_state_v] = gla_chunk_fwd(weights.pass_2_query, s, v, g, /*gate_on_value=*/false,
                                          1.0, initial_state_v, output_final_state, cu_seqlens);
  return {o, final_state_k, final_state_v};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gsa_chunk_bwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
              const at::Tensor& g, double scale, const at::Tensor& initial_state_k,
              const at::Tensor& initial_state_v, const at::Tensor& cu_seqlens,
              const at::Tensor& grad_o, const at::Tensor& grad_final_state_k,
              const at::Tensor& grad_final_state_v) {
  TORCH_CHECK(g.defined(), kBackwardOp, ": g is missing; expected shape [B, T, H, M]");
  gsa_check_inputs(kBackwardOp, q, k, v, s, g, initial_state_k, initial_state_v, cu_seqlens);
  check_shape(kBackwardOp, "grad_o", grad_o,
              {{"B", q.size(0)}, {"T", q.size(1)}, {"HQ", q.size(2)}, {"V", v.size(3)}});
  const auto dtype = compute_dtype(q.scalar_type());

  auto [weights, unused_state] = slot_weights(q, k, s, g, scale, initial_state_k,
                                              /*output_final_state=*/false, cu_seqlens);
  // Pass 2: queries p, keys s, values v, gate on the key side.
  auto [grad_weights, grad_s_pass_2, grad_v, grad_g_pass_2, grad_initial_state_v] =
      gla_chunk_bwd(weights.pass_2_query, s, v, g, /*gate_on_value=*/false, 1.0, initial_state_v,
                    cu_seqlens, grad_o, grad_final_state_v);
  // Softmax over the slots: dok = p ⊙ (dp − Σ_m p·dp).
  const auto& p = weights.probabilities;
  const auto dp = grad_weights.to(dtype);
  const auto grad_slot_scores = (p * (dp - (p * dp).sum(-1, /*keepdim=*/true))).to(q.scalar_type());
  // Pass 1: queries q, keys k, values s, gate on the value side.
  auto [grad_q, grad_k, grad_s_pass_1, grad_g_pass_1, grad_initial_state_k] =
      gla_chunk_bwd(q, k, s, g, /*gate_on_value=*/true, scale, initial_state_k, cu_seqlens,
                    grad_slot_scores, grad_final_state_k);

  auto grad_s = (grad_s_pass_1.to(dtype) + grad_s_pass_2.to(dtype)).to(s.scalar_type());
  auto grad_g = (grad_g_pass_1.to(dtype) + grad_g_pass_2.to(dtype)).to(g.scalar_type());
  return {grad_q.to(q.scalar_type()),
          grad_k.to(k.scalar_type()),
          grad_v.to(v.scalar_type()),
          grad_s,
          grad_g,
          initial_state_k.defined() ? grad_initial_state_k.to(initial_state_k.scalar_type())
                                    : at::Tensor(),
          initial_state_v.defined() ? grad_initial_state_v.to(initial_state_v.scalar_type())
                                    : at::Tensor()};
}

}  // namespace lintime::ops
