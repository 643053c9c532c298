// Gated slot attention (gsa.md §1–2): two GLA passes joined by a softmax over M slots.
// q [B,T,HQ,K], k [B,T,H,K], v [B,T,H,V], s and g [B,T,H,M]; states H^k [N,H,K,M],
// H^v [N,H,M,V]; one state per key/value head serves its HQ/H query heads.
// Pass 1: GLA(q, k, s, g, gate_on_value = true, scale) -> ok; p = softmax(ok) over M;
// Pass 2: GLA(p, s, v, g, gate_on_value = false, scale = 1) -> o.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace lintime::ops {

// Validates the inputs of the chunked and reference ops; throws with the tensor's name and shape.
// read_cu_seqlens = false checks cu_seqlens without reading its values (no host synchronisation).
void gsa_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& s, const at::Tensor& g,
                      const at::Tensor& initial_state_k, const at::Tensor& initial_state_v,
                      const at::Tensor& cu_seqlens, bool read_cu_seqlens = true);

// Token-by-token recurrence of gsa.md §1 in differentiable ATen ops. g undefined = ABC.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gsa_reference_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const at::Tensor& initial_state_k,
    const at::Tensor& initial_state_v, bool output_final_state, const at::Tensor& cu_seqlens);

// ABC gates from raw slot logits (differentiable ATen): returns (s, g).
std::tuple<at::Tensor, at::Tensor> abc_gates(const at::Tensor& s_logits, const at::Tensor& cu_seqlens);

std::tuple<at::Tensor, at::Tensor, at::Tensor> gsa_chunk_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const at::Tensor& initial_state_k,
    const at::Tensor& initial_state_v, bool output_final_state, const at::Tensor& cu_seqlens);

// Returns (grad_q, grad_k, grad_v, grad_s, grad_g, grad_initial_state_k, grad_initial_state_v).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gsa_chunk_bwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
              const at::Tensor& g, double scale, const at::Tensor& initial_state_k,
              const at::Tensor& initial_state_v, const at::Tensor& cu_seqlens,
              const at::Tensor& grad_o, const at::Tensor& grad_final_state_k,
              const at::Tensor& grad_final_state_v);

// One token: q [B,HQ,K], k [B,H,K], v [B,H,V], s and g [B,H,M], state_k [B,H,K,M], state_v [B,H,M,V].
void gsa_step_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const at::Tensor& s, const at::Tensor& g,
                           const at::Tensor& state_k, const at::Tensor& state_v);
// gsa_step_functional is the kernel behind the registered lintime::gsa_step (whose C++ entry
// point, ops::gsa_step in ops/register/ops.h, is the dispatcher call): it returns
// (o, new_state_k, new_state_v) and leaves the given states alone.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gsa_step_functional(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const at::Tensor& state_k, const at::Tensor& state_v);
at::Tensor gsa_step_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& s, const at::Tensor& g, double scale,
                            at::Tensor& state_k, at::Tensor& state_v);

// One token of B sequences whose states are rows of larger tensors (a server's slots, continued
// where they lie): row b continues state_k[rows[b]] [S, H, K, M] and state_v[rows[b]] [S, H, M, V];
// rows [B] int64, distinct, in [0, S). The other rows are left alone.
void gsa_step_rows_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& s, const at::Tensor& g, const at::Tensor& state_k,
                                const at::Tensor& state_v, const at::Tensor& rows);
// The reference: gathers the rows, steps them (gsa_step_inplace) and writes them back.
at::Tensor gsa_step_rows_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& s, const at::Tensor& g, double scale,
                                 at::Tensor& state_k, at::Tensor& state_v, const at::Tensor& rows);

}  // namespace lintime::ops
