// The one TORCH_LIBRARY(lintime) block: every op schema of lintime, registered once.
// Implementations are registered per backend in <op>_registration.cpp (CPU, Autograd, and
// CUDA in a later issue). Layout [B, T, H, D]; q may have HQ = G * H heads (grouped queries,
// one state per key/value head); states are fp32 (fp64 for fp64 inputs); a final state that
// was not requested is returned undefined (None in Python).
#include <torch/library.h>

TORCH_LIBRARY(lintime, m) {
  // Gated linear attention core. gate_on_value = false: S_t = Diag(exp(g_t)) S_{t-1} + k_t v_tᵀ,
  // g [B,T,H,K]; gate_on_value = true: S_t = S_{t-1} Diag(exp(g_t)) + k_t v_tᵀ, g [B,T,H,V].
  // o_t = scale * q_tᵀ S_t. State [N,H,K,V].
  m.def("gla_chunk(Tensor q, Tensor k, Tensor v, Tensor g, bool gate_on_value, float scale, "
        "Tensor? initial_state, bool output_final_state, Tensor? cu_seqlens) -> (Tensor o, Tensor final_state)");
  m.def("gla_chunk_bwd(Tensor q, Tensor k, Tensor v, Tensor g, bool gate_on_value, float scale, "
        "Tensor? initial_state, Tensor? cu_seqlens, Tensor grad_o, Tensor? grad_final_state) -> "
        "(Tensor grad_q, Tensor grad_k, Tensor grad_v, Tensor grad_g, Tensor grad_initial_state)");
  m.def("gla_reference(Tensor q, Tensor k, Tensor v, Tensor g, bool gate_on_value, float scale, "
        "Tensor? initial_state, bool output_final_state, Tensor? cu_seqlens) -> (Tensor o, Tensor final_state)");
  // One token: q [B,HQ,K], k [B,H,K], v [B,H,V], g [B,H,K|V], state [B,H,K,V].
  m.def("gla_step(Tensor q, Tensor k, Tensor v, Tensor g, bool gate_on_value, float scale, Tensor state) -> "
        "(Tensor o, Tensor new_state)");
  m.def("gla_step_(Tensor q, Tensor k, Tensor v, Tensor g, bool gate_on_value, float scale, Tensor(a!) state) -> Tensor o");

  // Gated slot attention: q [B,T,HQ,K], k [B,T,H,K], v [B,T,H,V], s and g [B,T,H,M];
  // states H^k [N,H,K,M], H^v [N,H,M,V] (gsa.md §1).
  m.def("gsa_chunk(Tensor q, Tensor k, Tensor v, Tensor s, Tensor g, float scale, Tensor? initial_state_k, "
        "Tensor? initial_state_v, bool output_final_state, Tensor? cu_seqlens) -> "
        "(Tensor o, Tensor final_state_k, Tensor final_state_v)");
  m.def("gsa_chunk_bwd(Tensor q, Tensor k, Tensor v, Tensor s, Tensor g, float scale, Tensor? initial_state_k, "
        "Tensor? initial_state_v, Tensor? cu_seqlens, Tensor grad_o, Tensor? grad_final_state_k, "
        "Tensor? grad_final_state_v) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v, Tensor grad_s, "
        "Tensor grad_g, Tensor grad_initial_state_k, Tensor grad_initial_state_v)");
  // Training pair: the forward also returns internals that the backward takes instead of
  // recomputing them (the fused CUDA kernels: ok, p, the pass-2 scores, the decayed operands);
  // the general path returns none and its backward recomputes (gsa_chunk's autograd uses these).
  m.def("gsa_chunk_with_internals(Tensor q, Tensor k, Tensor v, Tensor s, Tensor g, float scale, "
        "Tensor? initial_state_k, Tensor? initial_state_v, bool output_final_state, Tensor? cu_seqlens) -> "
        "(Tensor o, Tensor final_state_k, Tensor final_state_v, Tensor[] internals)");
  m.def("gsa_chunk_bwd_with_internals(Tensor q, Tensor k, Tensor v, Tensor s, Tensor g, float scale, "
        "Tensor? initial_state_k, Tensor? initial_state_v, Tensor? cu_seqlens, Tensor grad_o, "
        "Tensor? grad_final_state_k, Tensor? grad_final_state_v, Tensor[] internals) -> (Tensor grad_q, "
        "Tensor grad_k, Tensor grad_v, Tensor grad_s, Tensor grad_g, Tensor grad_initial_state_k, "
        "Tensor grad_initial_state_v)");
  // The shapes of the internals gsa_chunk_with_internals returns for inputs of these sizes
  // ([B, T, HQ, H, K, V, M, N, varlen]), dtype and device: per tensor [ndim, sizes..., 0 for fp32 /
  // 1 for the inputs' dtype]; empty where no fused kernel keeps any. Its fake kernel asks (torch.compile).
  m.def("gsa_chunk_internals_layout(int[] sizes, ScalarType dtype, Device device) -> int[]");
  // Reference recurrence; g = None selects ABC (s holds raw slot logits, gsa.md §1).
  m.def("gsa_reference(Tensor q, Tensor k, Tensor v, Tensor s, Tensor? g, float scale, Tensor? initial_state_k, "
        "Tensor? initial_state_v, bool output_final_state, Tensor? cu_seqlens) -> "
        "(Tensor o, Tensor final_state_k, Tensor final_state_v)");
  // ABC slot gates from raw slot logits: z = logcumsumexp_t(s_logits), g_t = z_{t-1} - z_t (g_0 = 0),
  // s_t = exp(s_logits_t - z_t); per sequence when cu_seqlens is given.
  m.def("abc_gates(Tensor s_logits, Tensor? cu_seqlens) -> (Tensor s, Tensor g)");
  // One token: q [B,HQ,K], k [B,H,K], v [B,H,V], s and g [B,H,M], state_k [B,H,K,M], state_v [B,H,M,V].
  m.def("gsa_step(Tensor q, Tensor k, Tensor v, Tensor s, Tensor g, float scale, Tensor state_k, Tensor state_v) -> "
        "(Tensor o, Tensor new_state_k, Tensor new_state_v)");
  m.def("gsa_step_(Tensor q, Tensor k, Tensor v, Tensor s, Tensor g, float scale, Tensor(a!) state_k, "
        "Tensor(b!) state_v) -> Tensor o");
  // One token of the sequences in rows [B] (int64, distinct) of state_k [S,H,K,M] and state_v [S,H,M,V],
  // continued in place there (a server's slots); the other rows are left alone.
  m.def("gsa_step_rows_(Tensor q, Tensor k, Tensor v, Tensor s, Tensor g, float scale, Tensor(a!) state_k, "
        "Tensor(b!) state_v, Tensor rows) -> Tensor o");
  // Taylor linear attention (BASED): q, k [B,T,H,D], v [B,T,H,V]; states S [N,H,E,V], z [N,H,E]
  // with E = 1 + D + D² (ops/based/taylor_attention.h).
  m.def("taylor_attention_chunk(Tensor q, Tensor k, Tensor v, bool normalize, float eps, Tensor? initial_state, "
        "Tensor? initial_normalizer, bool output_final_state, Tensor? cu_seqlens) -> "
        "(Tensor o, Tensor final_state, Tensor final_normalizer)");
  m.def("taylor_attention_reference(Tensor q, Tensor k, Tensor v, bool normalize, float eps, Tensor? initial_state, "
        "Tensor? initial_normalizer, bool output_final_state, Tensor? cu_seqlens) -> "
        "(Tensor o, Tensor final_state, Tensor final_normalizer)");
  // One token: q, k [B,H,D], v [B,H,V], state [B,H,E,V], normalizer [B,H,E].
  m.def("taylor_attention_step(Tensor q, Tensor k, Tensor v, bool normalize, float eps, Tensor state, "
        "Tensor normalizer) -> (Tensor o, Tensor new_state, Tensor new_normalizer)");
  m.def("taylor_attention_step_(Tensor q, Tensor k, Tensor v, bool normalize, float eps, Tensor(a!) state, "
        "Tensor(b!) normalizer) -> Tensor o");
  // Sliding-window causal softmax attention (BASED): q, k [B,T,H,D], v [B,T,H,V]; window = keys
  // seen per query, itself included (ops/based/sliding_window_attention.h).
  m.def("sliding_window_attention(Tensor q, Tensor k, Tensor v, int window, float scale, Tensor? cu_seqlens) -> Tensor o");
  m.def("sliding_window_attention_reference(Tensor q, Tensor k, Tensor v, int window, float scale, "
        "Tensor? cu_seqlens) -> Tensor o");
  // Decoding: ring buffers key_cache [B,H,w,D], value_cache [B,H,w,V], positions [B] int64.
  m.def("sliding_window_cache_from_prefill(Tensor k, Tensor v, int window) -> "
        "(Tensor key_cache, Tensor value_cache, Tensor positions)");
  m.def("sliding_window_attention_step_(Tensor q, Tensor k, Tensor v, int window, float scale, "
        "Tensor(a!) key_cache, Tensor(b!) value_cache, Tensor(c!) positions) -> Tensor o");
  // The fused CUDA kernels of BASED's ops as ops of their own (CUDA kernels only): the composites
  // above call them where they take the inputs, so that tracing (torch.compile) sees an op with a
  // fake kernel instead of a kernel launch on data it does not have.
  m.def("taylor_attention_fused(Tensor q, Tensor k, Tensor v, bool normalize, float eps, bool output_final_state) -> "
        "(Tensor o, Tensor final_state, Tensor final_normalizer)");
  m.def("taylor_attention_fused_bwd(Tensor q, Tensor k, Tensor v, Tensor o, Tensor grad_o, bool normalize, "
        "float eps) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  m.def("sliding_window_attention_fused(Tensor q, Tensor k, Tensor v, int window, float scale, bool keep_lse) -> "
        "(Tensor o, Tensor lse)");
  m.def("sliding_window_attention_fused_bwd(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor grad_o, "
        "int window, float scale) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  m.def("short_convolution_fused(Tensor x, Tensor weight, Tensor? bias, bool silu, Tensor? initial_state, "
        "bool output_final_state) -> (Tensor y, Tensor final_state)");
  m.def("short_convolution_fused_bwd(Tensor x, Tensor weight, Tensor? bias, bool silu, Tensor grad_y) -> "
        "(Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");
  // Short causal depthwise convolution (ops/conv/short_convolution.h): weight [D, 1, W].
  m.def("short_convolution(Tensor x, Tensor weight, Tensor? bias, bool silu, Tensor? initial_state, "
        "bool output_final_state, Tensor? cu_seqlens) -> (Tensor y, Tensor final_state)");
  m.def("short_convolution_reference(Tensor x, Tensor weight, Tensor? bias, bool silu, Tensor? initial_state, "
        "bool output_final_state, Tensor? cu_seqlens) -> (Tensor y, Tensor final_state)");
  m.def("short_convolution_step_(Tensor x, Tensor weight, Tensor? bias, bool silu, Tensor(a!) state) -> Tensor y");
}
