// Gated linear attention (GLA), the core both GSA passes are built on: reference recurrence,
// chunked forward/backward (training, prefill) and one-token step (decoding).
//
// Shapes: q [B,T,HQ,K], k [B,T,H,K], v [B,T,H,V]; HQ = G*H query heads share the state of
// their key/value head. g holds log forget gates (<= 0):
//   gate_on_value = false: g [B,T,H,K], S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ
//   gate_on_value = true:  g [B,T,H,V], S_t = S_{t-1} Diag(exp(g_t)) + k_t v_tᵀ
//   o_t = scale * S_tᵀ q_t  for each query head.
// initial_state [N,H,K,V] (undefined = zeros); cu_seqlens [N+1] packs N sequences along T
// (B == 1), otherwise N = B. Computation in fp32 (fp64 for fp64 inputs); o in q's dtype;
// final_state in the compute dtype, undefined unless requested.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace lintime::ops {

// Validates the inputs of every GLA entry point; throws with the tensor's name and shape.
void gla_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& g, bool gate_on_value,
                      const at::Tensor& initial_state, const at::Tensor& cu_seqlens);

// Validates the inputs of gla_step / gla_step_inplace (one token, state [B,H,K,V]).
void gla_step_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const at::Tensor& g, bool gate_on_value,
                           const at::Tensor& state);

// The dtype GLA computes in: fp64 when any of q, k, v, g is fp64, else fp32.
at::ScalarType gla_compute_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& g);

// Token-by-token recurrence written in differentiable ATen ops (autograd gives its gradients).
std::tuple<at::Tensor, at::Tensor> gla_reference_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const at::Tensor& initial_state, bool output_final_state,
    const at::Tensor& cu_seqlens);

// Chunkwise-parallel forward (chunk 64, numerically safe intra-chunk decays).
std::tuple<at::Tensor, at::Tensor> gla_chunk_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const at::Tensor& initial_state, bool output_final_state,
    const at::Tensor& cu_seqlens);

// Analytic backward of gla_chunk_fwd. grad_final_state may be undefined.
// Returns (grad_q, grad_k, grad_v, grad_g, grad_initial_state); grad_initial_state is
// undefined when initial_state is undefined. Gradients have their input's dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gla_chunk_bwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const at::Tensor& initial_state,
    const at::Tensor& cu_seqlens, const at::Tensor& grad_o, const at::Tensor& grad_final_state);

// One token: q [B,HQ,K], k [B,H,K], v [B,H,V], g [B,H,K|V], state [B,H,K,V].
// Functional form returns (o [B,HQ,V], new_state); the in-place form updates `state`.
std::tuple<at::Tensor, at::Tensor> gla_step(const at::Tensor& q, const at::Tensor& k,
                                            const at::Tensor& v, const at::Tensor& g,
                                            bool gate_on_value, double scale,
                                            const at::Tensor& state);
at::Tensor gla_step_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& g, bool gate_on_value, double scale,
                            at::Tensor& state);

}  // namespace lintime::ops
