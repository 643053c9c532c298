// The C++ entry points of lintime's registered ops, called through the dispatcher so that the
// backend (CPU, later CUDA) and autograd are chosen the same way as from Python.
// Layers and models call these, never the implementation functions directly.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace lintime::ops {

struct GlaResult {
  at::Tensor o;            // [B, T, HQ, V] (input dtype)
  at::Tensor final_state;  // [N, H, K, V] fp32, undefined unless requested
};

GlaResult gla_chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& g, bool gate_on_value, double scale,
                    const std::optional<at::Tensor>& initial_state = std::nullopt,
                    bool output_final_state = false,
                    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
GlaResult gla_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& g, bool gate_on_value, double scale,
                        const std::optional<at::Tensor>& initial_state = std::nullopt,
                        bool output_final_state = false,
                        const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
// Returns o [B, HQ, V]; updates `state` [B, H, K, V] in place.
at::Tensor gla_step_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& g, bool gate_on_value, double scale, at::Tensor& state);
// The GLA recurrence as the layers built on it run it (GLA, RetNet, HGRN2): state == nullptr,
// the chunked op from a zero state (training); otherwise one token decodes in place with the
// step op, and several prefill from the state with the chunked op and replace it with the final
// state. q, k, g [B, T, H, K], v [B, T, H, V], state [B, H, K, V]; returns o [B, T, H, V].
at::Tensor gla_run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                   bool gate_on_value, double scale, at::Tensor* state);

struct GsaResult {
  at::Tensor o;              // [B, T, HQ, V] (input dtype)
  at::Tensor final_state_k;  // [N, H, K, M] fp32, undefined unless requested
  at::Tensor final_state_v;  // [N, H, M, V] fp32, undefined unless requested
};

// Chunked GSA (training, prefill). g = nullopt selects ABC: s holds raw slot logits and the
// gates come from abc_gates.
GsaResult gsa_chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& s, const std::optional<at::Tensor>& g, double scale,
                    const std::optional<at::Tensor>& initial_state_k = std::nullopt,
                    const std::optional<at::Tensor>& initial_state_v = std::nullopt,
                    bool output_final_state = false,
                    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
GsaResult gsa_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& s, const std::optional<at::Tensor>& g, double scale,
                        const std::optional<at::Tensor>& initial_state_k = std::nullopt,
                        const std::optional<at::Tensor>& initial_state_v = std::nullopt,
                        bool output_final_state = false,
                        const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
// gsa_chunk(swish(q), swish(k), swish(v), s, g, scale) from a zero state: o [B, T, HQ, V]. When a
// gradient is recorded the graph keeps q, k, v as given, not their swish (which gsa_chunk and
// swish's own backward would each keep: three [B, T, ·] tensors fewer per layer in training);
// the backward recomputes the swish. Gradients equal those of at::silu then gsa_chunk bit for bit.
// Defined in gsa_registration.cpp, beside gsa_chunk's autograd function, whose calls it shares.
at::Tensor gsa_chunk_of_swish(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
                              const at::Tensor& g, double scale,
                              const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
// Returns o [B, HQ, V]; updates state_k [B, H, K, M] and state_v [B, H, M, V] in place.
at::Tensor gsa_step_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& s, const at::Tensor& g, double scale,
                     at::Tensor& state_k, at::Tensor& state_v);
// gsa_step_ for the sequences in rows [B] (int64, distinct, in [0, S)) of state_k [S, H, K, M] and
// state_v [S, H, M, V], updated where they lie (a server's slots: nothing gathered or written back).
at::Tensor gsa_step_rows_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& s, const at::Tensor& g, double scale,
                          at::Tensor& state_k, at::Tensor& state_v, const at::Tensor& rows);
// Functional step: returns (o, new_state_k, new_state_v).
std::tuple<at::Tensor, at::Tensor, at::Tensor> gsa_step(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v, const at::Tensor& s,
                                                        const at::Tensor& g, double scale,
                                                        const at::Tensor& state_k,
                                                        const at::Tensor& state_v);

struct TaylorAttentionResult {
  at::Tensor o;                 // [B, T, H, V] (input dtype)
  at::Tensor final_state;       // S [N, H, E, V], E = 1 + D + D²; undefined unless requested
  at::Tensor final_normalizer;  // z [N, H, E]; undefined unless requested
};

// Taylor linear attention (BASED, ops/based/taylor_attention.h), chunked and reference forms.
TaylorAttentionResult taylor_attention_chunk(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             bool normalize, double eps,
                                             const std::optional<at::Tensor>& initial_state = std::nullopt,
                                             const std::optional<at::Tensor>& initial_normalizer = std::nullopt,
                                             bool output_final_state = false,
                                             const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
TaylorAttentionResult taylor_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 bool normalize, double eps,
                                                 const std::optional<at::Tensor>& initial_state = std::nullopt,
                                                 const std::optional<at::Tensor>& initial_normalizer = std::nullopt,
                                                 bool output_final_state = false,
                                                 const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
// One token: returns o [B, H, V]; updates state [B, H, E, V] and normalizer [B, H, E] in place.
at::Tensor taylor_attention_step_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  bool normalize, double eps, at::Tensor& state, at::Tensor& normalizer);
// Functional step: returns (o, new_state, new_normalizer).
std::tuple<at::Tensor, at::Tensor, at::Tensor> taylor_attention_step(const at::Tensor& q, const at::Tensor& k,
                                                                     const at::Tensor& v, bool normalize,
                                                                     double eps, const at::Tensor& state,
                                                                     const at::Tensor& normalizer);

// Sliding-window causal softmax attention (BASED, ops/based/sliding_window_attention.h): window =
// keys seen per query, itself included. Returns o [B, T, H, V].
at::Tensor sliding_window_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                                    double scale, const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
at::Tensor sliding_window_attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              int64_t window, double scale,
                                              const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
// Ring buffers after a prefill of k, v [B, T, H, ·]: (key_cache, value_cache, positions).
std::tuple<at::Tensor, at::Tensor, at::Tensor> sliding_window_cache_from_prefill(const at::Tensor& k,
                                                                                 const at::Tensor& v,
                                                                                 int64_t window);
// One token: returns o [B, H, V]; writes k, v into the ring buffers and advances positions.
at::Tensor sliding_window_attention_step_(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          int64_t window, double scale, at::Tensor& key_cache,
                                          at::Tensor& value_cache, at::Tensor& positions);

// Short causal depthwise convolution (ops/conv/short_convolution.h): returns (y [B, T, D], the
// final state [N, W − 1, D], undefined unless requested).
std::tuple<at::Tensor, at::Tensor> short_convolution(const at::Tensor& x, const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias, bool silu,
                                                     const std::optional<at::Tensor>& initial_state = std::nullopt,
                                                     bool output_final_state = false,
                                                     const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
std::tuple<at::Tensor, at::Tensor> short_convolution_reference(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, bool silu,
    const std::optional<at::Tensor>& initial_state = std::nullopt, bool output_final_state = false,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
// One token: x [B, D] -> y [B, D]; the state [B, W − 1, D] shifts in place.
at::Tensor short_convolution_step_(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                   bool silu, at::Tensor& state);

}  // namespace lintime::ops
