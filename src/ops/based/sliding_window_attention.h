// Sliding-window causal softmax attention, the local mixer of BASED (docs based.md §2).
//
// Convention: `window` = w is the number of keys a query sees, itself included: query t attends
// to keys [t − w + 1, t] of its sequence. (FlashAttention's window_size = (w', 0) is w = w' + 1.)
// Shapes: q, k [B,T,H,D], v [B,T,H,V]; o [B,T,H,V] in q's dtype; scale multiplies q·k (usually
// D^-1/2); RoPE, when used, is applied to q and k before (by the layer). cu_seqlens [N+1] packs
// N sequences along T (B == 1). Computation in fp32 (fp64 for fp64 inputs), differentiable ATen
// ops: autograd gives the gradients.
//
// Decoding keeps the last w keys and values per sequence in a ring buffer: key_cache [B,H,w,D],
// value_cache [B,H,w,V], and positions [B] (int64, the index of the token being decoded, that is
// the number of tokens before it); the step writes the token at slot position mod w and attends
// to the min(position + 1, w) slots filled.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace lintime::ops {

void sliding_window_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, int64_t window, const at::Tensor& cu_seqlens);

// Every score formed and masked: the reference.
at::Tensor sliding_window_attention_reference_fwd(const at::Tensor& q, const at::Tensor& k,
                                                  const at::Tensor& v, int64_t window, double scale,
                                                  const at::Tensor& cu_seqlens);

// Query blocks of 64 against the keys they can see (64 + w − 1): memory O(T (64 + w)).
at::Tensor sliding_window_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        int64_t window, double scale, const at::Tensor& cu_seqlens);

// The ring buffer after a prefill of k, v [B,T,H,·] (no cu_seqlens): (key_cache, value_cache,
// positions = T), ready for sliding_window_attention_step_.
std::tuple<at::Tensor, at::Tensor, at::Tensor> build_sliding_window_cache(const at::Tensor& k,
                                                                                 const at::Tensor& v,
                                                                                 int64_t window);

// One token: q, k [B,H,D], v [B,H,V]; writes k, v into the caches, advances positions, returns
// o [B,H,V].
at::Tensor sliding_window_attention_step_inplace(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, int64_t window, double scale,
                                                 at::Tensor& key_cache, at::Tensor& value_cache,
                                                 at::Tensor& positions);

}  // namespace lintime::ops
