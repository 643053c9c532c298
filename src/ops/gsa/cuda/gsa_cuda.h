// The torch-free interface of lintime's GSA CUDA kernels: a plain params struct of pointers and
// sizes, filled by the binding (ops/register/gsa_cuda_registration.cpp) after every check, and
// the launchers. Kernels, their tiling and their numerics are described in README.md beside this.
//
// Layout: every token tensor is contiguous [total_tokens, heads, dim] with total_tokens = B * T;
// sequence n covers tokens [bos_n, eos_n): n * T .. (n + 1) * T, or cu_seqlens[n] .. cu_seqlens[n+1].
// Workspace tensors are fp32 unless noted and padded to `padded_slots` (32, 64 or 128) slots.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace lintime::cuda {

enum class ElementType { bfloat16, float16, float32 };

constexpr int kChunk = 64;      // tokens per chunk
constexpr int kHeadTile = 64;   // key / value columns per state tile (one CTA each)

// Parts of a split operand (README.md): three 16-bit parts carry 24 significant bits; fp32 one.
constexpr int split_parts(ElementType element) { return element == ElementType::float32 ? 1 : 3; }

// Slots are padded to the next of these (the kernels are compiled for each).
int padded_slots_for(int slots);  // 0 when slots > 128

struct GsaParams {
  // Sizes.
  int total_tokens = 0;        // B * T
  int seqlen = 0;              // T (without cu_seqlens)
  int num_sequences = 0;       // N
  int heads = 0, query_heads = 0, groups = 0;  // H, HQ, HQ / H
  int key_dim = 0, value_dim = 0, slots = 0, padded_slots = 0;
  int max_chunks = 0;          // grid bound on the number of chunks of all sequences
  float scale = 1.f;
  ElementType element = ElementType::bfloat16;

  // Varlen: cu_seqlens [N + 1] int32 on the device, or null; chunk_offsets [N + 1] (workspace,
  // filled by the launchers): the first global chunk index of each sequence.
  const int* cu_seqlens = nullptr;
  int* chunk_offsets = nullptr;

  // Inputs. q [tok, HQ, K], k [tok, H, K], v [tok, H, V], s [tok, H, M] in the element type;
  // g [tok, H, M] fp32, or in the element type when gate_in_element_type (read as it comes:
  // no conversion kernel per call). States fp32: [N, H, K, M] and [N, H, M, V] (null: zeros).
  const void *q = nullptr, *k = nullptr, *v = nullptr, *s = nullptr;
  const void* g = nullptr;
  bool gate_in_element_type = false;
  const float *initial_state_k = nullptr, *initial_state_v = nullptr;

  // Forward outputs: o [tok, HQ, V] (element type); final states (null: not requested). The final
  // states may alias the initial states (in-place decoding).
  void* o = nullptr;
  float *final_state_k = nullptr, *final_state_v = nullptr;

  // Forward internals kept for the backward (training): the forward computes them as the
  // backward uses them (ok with the split key state, p ⊙ e^b in all parts) and its caller keeps
  // the workspace below; the backward then takes them as given instead of recomputing them.
  bool internals_for_backward = false;

  // Forward workspace (chunked path).
  float* gate_cumsum = nullptr;   // b [tok, H, MP]: cumulative g inside each chunk
  // ok = inter-chunk part + intra-chunk s < t part + s = t term (scale included), kept apart
  // for the gate gradient (README.md).
  float* slot_scores = nullptr;         // inter-chunk part [tok, HQ, MP] (zeroed, then atomics)
  float* slot_scores_intra = nullptr;   // intra-chunk s < t part [tok, HQ, MP]
  float* key_score_diagonal = nullptr;  // the s = t term's weight scale q_t·k_t (rounded as used) [tok, HQ]
  void* probabilities = nullptr;  // p = softmax(ok) in the element type [tok, HQ, MP]
  void* value_scores = nullptr;   // pass-2 intra-chunk scores, element type [chunks, HQ, 64, 64]
  // The decayed slot operands of the state kernels, prepared once per (chunk, head) rather than
  // once per head-dim tile, chunk-blocked [chunks, heads, split_parts, 64, MP] in the element
  // type and split (README.md) so that the state kernels load them as tiles (cp.async):
  void* decayed_write_blocks = nullptr;        // s ⊙ exp(b_L − b) per key/value head
  void* decayed_probability_blocks = nullptr;  // p ⊙ exp(b) per query head
  void* decayed_grad_score_blocks = nullptr;   // dok ⊙ exp(b) per query head (backward)
  int decayed_probability_parts = 1;  // parts written (the forward's o takes one; set by the launchers)

  // Backward inputs and outputs. grad_final_state_* may be null. grad_s and grad_g [tok, H, M]
  // are written in the element type or fp32 (the *_in_element_type flags), so that they need no
  // conversion kernel; grad_initial_state_* only when the initial state was given.
  const void* grad_o = nullptr;
  const float *grad_final_state_k = nullptr, *grad_final_state_v = nullptr;
  void *grad_q = nullptr, *grad_k = nullptr, *grad_v = nullptr;
  void *grad_s = nullptr, *grad_g = nullptr;
  bool grad_s_in_element_type = false, grad_g_in_element_type = false;
  float *grad_initial_state_k = nullptr, *grad_initial_state_v = nullptr;

  // Backward workspace.
  // dp and ds likewise in three parts.
  float* grad_probabilities = nullptr;        // dp, inter-chunk part [tok, HQ, MP]
  float* grad_probabilities_intra = nullptr;  // dp, intra-chunk s < t part [tok, HQ, MP]
  float* value_score_diagonal = nullptr;      // dp's s = t weight do_t·v_t (rounded as used) [tok, HQ]
  float* grad_slot_write = nullptr;           // ds, inter-chunk part [tok, H, MP] (both passes)
  float* grad_slot_write_intra = nullptr;     // ds, intra-chunk t > s part [tok, H, MP]
  float* grad_slot_write_diagonal = nullptr;  // ds, s = t terms [tok, H, MP]
  void* grad_slot_scores = nullptr;      // dok, element type [tok, HQ, MP]
  void* grad_key_scores = nullptr;       // pass-1 intra-chunk score gradients, element type [chunks, HQ, 64, 64]
  float* gate_terms = nullptr;           // [tok, H, MP]: per-token terms of dg before the reverse sum, without -s ⊙ ds_inter
  float* gate_final = nullptr;           // [N, H, MP]: final-state term of dg
  float* chunk_totals = nullptr;         // [chunks, H, MP]

  // Segment-parallel sweeps (README.md): the state kernels split each sequence into `segments`
  // runs of whole chunks. Phase A (sweep_local) sweeps every segment from a zero state and
  // writes its end state into these buffers; the scans turn them into each segment's start
  // state; phase B sweeps again from there with every output. Layout as the states, with
  // N * segments entries: [N S, H, K, M] and [N S, H, M, V]. segments == 1: not used.
  int segments = 1;
  bool sweep_local = false;
  float *segment_states_k = nullptr, *segment_states_v = nullptr;            // H^k, H^v
  float *segment_grad_states_k = nullptr, *segment_grad_states_v = nullptr;  // dH^k, dH^v

  // Recurrent path workspace: partial slot scores of each key tile [K tiles, tok, HQ, MP]. The
  // device's SM count: single-token steps with fewer (head, sequence) pairs take the two kernels.
  float* slot_score_partials = nullptr;
  int multiprocessors = 0;

  // In-place decoding of some rows of larger state tensors (a server's slots, continued where
  // they lie): sequence n's initial and final states are row state_rows[n] (int64 on the device)
  // of [state_row_count, H, K, M] and [state_row_count, H, M, V]. A row outside them stops the
  // kernel, as ATen's device-side index checks do. Null: row n. The token-by-token kernels only.
  const int64_t* state_rows = nullptr;
  int64_t state_row_count = 0;
  // The token-by-token kernels' initial and final states stored in bf16 (the pointers above then
  // point at bf16 elements): read widened to fp32, computed in fp32, stored rounded once per call
  // (serve --state-dtype bfloat16: half the state traffic of a decoding step).
  bool bfloat16_states = false;
};

// Largest dynamic shared memory of the chunked kernels for these params, in bytes: the binding
// routes shapes whose kernels would not fit the device to the general path.
size_t gsa_chunk_smem_bytes(ElementType element, int padded_slots);

// Chunked forward: o, and the final states when requested (and the internals in the workspace,
// computed for the backward, when internals_for_backward).
cudaError_t gsa_chunk_forward(const GsaParams& params, cudaStream_t stream);
// Chunked backward: recomputes the forward internals (unless internals_for_backward: then the
// workspace holds them), then every gradient.
cudaError_t gsa_chunk_backward(const GsaParams& params, cudaStream_t stream);
// Token-by-token forward (decoding and short inputs): o, and the final states when requested.
cudaError_t gsa_recurrent_forward(const GsaParams& params, cudaStream_t stream);

}  // namespace lintime::cuda
