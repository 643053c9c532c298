// Taylor linear attention, the global mixer of BASED (docs based.md §1): linear attention with
// the second-order Taylor feature map
//   φ(x) = [1, x / D^{1/4}, vec(x ⊗ x) / (√2 · √D)]   (E = 1 + D + D² features)
// so that φ(q)·φ(k) = 1 + s + s²/2 with s = q·k / √D (the expansion of exp(s)).
//
// Shapes: q, k [B,T,H,D] (D = the feature dim d', 8–24), v [B,T,H,V]. Per head:
//   S_t = S_{t-1} + φ(k_t) v_tᵀ  [E, V],   z_t = z_{t-1} + φ(k_t)  [E]
//   o_t = φ(q_t)ᵀ S_t / (φ(q_t)·z_t + eps)   (normalize = true: the paper's form)
//   o_t = φ(q_t)ᵀ S_t                          (normalize = false: ThunderKittens' demo model,
//                                               whose layer applies a per-head RMSNorm instead)
// State: S [N,H,E,V] and z [N,H,E] in the full E-feature layout of φ above (undefined initial
// state = zeros); cu_seqlens [N+1] packs N sequences along T (B == 1), otherwise N = B.
// Computation in fp32 (fp64 for fp64 inputs); o in q's dtype; final states in the compute dtype,
// undefined unless requested. Written in differentiable ATen ops: autograd gives the gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace lintime::ops {

// Features of φ for key/query dim D: 1 + D + D².
int64_t taylor_feature_count(int64_t feature_dim);

// φ along the last dim: [..., D] -> [..., 1 + D + D²].
at::Tensor taylor_feature_map(const at::Tensor& x);

// Validates the inputs of the sequence entry points; throws with the tensor's name and shape.
void taylor_attention_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v, double eps, const at::Tensor& initial_state,
                                   const at::Tensor& initial_normalizer, const at::Tensor& cu_seqlens);

// Validates the inputs of the one-token step (q, k [B,H,D], v [B,H,V], S [B,H,E,V], z [B,H,E]).
void taylor_attention_step_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, double eps, const at::Tensor& state,
                                        const at::Tensor& normalizer);

using TaylorOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;  // o, S, z

// Token-by-token recurrence with φ materialised: the reference.
TaylorOutputs taylor_attention_reference_fwd(const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& v, bool normalize, double eps,
                                             const at::Tensor& initial_state,
                                             const at::Tensor& initial_normalizer,
                                             bool output_final_state, const at::Tensor& cu_seqlens);

// Chunked form (chunks of 64 tokens): inside a chunk the quadratic form with
// A_ts = 1 + s_ts + s_ts²/2 for s ≤ t (φ not materialised), across chunks the states.
TaylorOutputs taylor_attention_chunk_fwd(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v, bool normalize, double eps,
                                         const at::Tensor& initial_state,
                                         const at::Tensor& initial_normalizer,
                                         bool output_final_state, const at::Tensor& cu_seqlens);

// One token. Functional: returns (o [B,H,V], new S, new z); in place: updates S and z.
TaylorOutputs taylor_attention_step_functional(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    bool normalize, double eps, const at::Tensor& state,
                                    const at::Tensor& normalizer);
at::Tensor taylor_attention_step_inplace(const at::Tensor& q, const at::Tensor& k,
                                         const at::Tensor& v, bool normalize, double eps,
                                         at::Tensor& state, at::Tensor& normalizer);

}  // namespace lintime::ops
