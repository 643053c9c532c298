// GLA chunkwise-parallel forward and analytic backward on CPU in ATen ops (README.md has the
// derivation). Sequences are laid out as padded chunks [N, H, (G,) n, C, D], so every step is a
// tensor op batched over sequences, heads and chunks; only the state recurrence between chunks
// loops (over n). Intra-chunk decays use 16-token sub-chunks with reference points: blocks
// below the diagonal factor with exponents <= 0; diagonal blocks are pairwise exp(b_t - b_s),
// or factored too when no sub-chunk decays by more than 30 (no overflow whatever the gates).
#include "ops/gla/gla.h"

#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

namespace lintime::ops {
namespace {

constexpr int64_t kChunk = 64;
constexpr int64_t kSubChunk = 16;
constexpr int64_t kSubChunks = kChunk / kSubChunk;

// Token layout [B, T, Hx, D] <-> padded chunk layout [N, Hx, n, C, D]: one row per sequence
// (N = B, or the cu_seqlens sequences with B = 1), each padded with zeros to n chunks.
// Zero padding is neutral: q = k = v = 0 adds nothing, g = 0 keeps the state.
struct ChunkLayout {
  int64_t batch = 0, length = 0, sequences = 0, chunks = 0;
  bool varlen = false;
  at::Tensor gather;   // [N * n * C] int64: token of each padded slot, `length` for padding
  at::Tensor scatter;  // [T] int64: padded slot of each token

  ChunkLayout(int64_t batch_size, int64_t sequence_length, const at::Tensor& cu_seqlens)
      : batch(batch_size), length(sequence_length), varlen(cu_seqlens.defined()) {
    if (!varlen) {
      sequences = batch;
      chunks = std::max<int64_t>(1, (length + kChunk - 1) / kChunk);
      return;
    }
    const std::vector<int64_t> offsets = sequence_offsets(cu_seqlens);
    sequences = static_cast<int64_t>(offsets.size()) - 1;
    chunks = 1;
    for (int64_t i = 0; i < sequences; ++i) {
      chunks = std::max(chunks, (offsets[i + 1] - offsets[i] + kChunk - 1) / kChunk);
    }
    const int64_t padded = chunks * kChunk;
    std::vector<int64_t> gather_host(sequences * padded, length), scatter_host(length);
    for (int64_t i = 0; i < sequences; ++i) {
      for (int64_t p = 0; p < offsets[i + 1] - offsets[i]; ++p) {
        gather_host[i * padded + p] = offsets[i] + p;
        scatter_host[offsets[i] + p] = i * padded + p;
      }
    }
    auto long_options = at::TensorOptions().dtype(at::kLong);
    gather = at::tensor(gather_host, long_options).to(cu_seqlens.device());
    scatter = at::tensor(scatter_host, long_options).to(cu_seqlens.device());
  }

  // [B, T, Hx, D] -> [N, Hx, n, C, D] (contiguous)
  at::Tensor to_chunks(const at::Tensor& x) const {
    const int64_t heads = x.size(2), dim = x.size(3);
    at::Tensor padded;
    if (!varlen) {
      padded = at::constant_pad_nd(x, {0, 0, 0, 0, 0, chunks * kChunk - length});
    } else {
      at::Tensor extended = at::cat({x[0], at::zeros({1, heads, dim}, x.options())}, 0);
      padded = extended.index_select(0, gather);
    }
    return padded.reshape({sequences, chunks, kChunk, heads, dim}).permute({0, 3, 1, 2, 4})
        .contiguous();
  }

  // [N, Hx, n, C, D] -> [B, T, Hx, D] (contiguous)
  at::Tensor from_chunks(const at::Tensor& y) const {
    const int64_t heads = y.size(1), dim = y.size(4);
    at::Tensor rows = y.permute({0, 2, 3, 1, 4}).reshape({sequences, chunks * kChunk, heads, dim});
    if (!varlen) return rows.slice(1, 0, length).contiguous();
    return rows.reshape({sequences * chunks * kChunk, heads, dim}).index_select(0, scatter)
        .unsqueeze(0);
  }
};

// Largest |cumulative log gate| within a chunk for which the decays are formed in float32: its
// rounding, 16 · 2^-24 ≈ 1e-6, then stays below the float32 tests' 1e-5.
constexpr double kFloat32LogGateLimit = 16.0;

// Largest total decay of one 16-token sub-chunk for which its diagonal block is computed in
// factored form: the factors then lie in [e^-30, e^30], far inside fp32's range (e^±87).
constexpr double kFactoredDiagonalMaxDecay = 30.0;

// Decay factors of cumulative log gates b [..., n, C, D] (b_t = sum of g over the chunk up to
// t). Sub-chunk i (16 tokens) has the reference r_i = b of the token just before it (r_0 = 0)
// and ends at e_i. Masked entries are set to -inf before exp, so they become exact zeros.
//
// Pairwise mode (any gates): every exponent is <= 0. Blocks below the diagonal factor as
// exp(b_t - r_i) exp(r_i - b_s); the diagonal blocks use exp(b_t - b_s) per pair.
// Factored mode (every sub-chunk decays by at most kFactoredDiagonalMaxDecay): the diagonal
// blocks factor through r_i as well, exp(r_i - b_s) <= e^30 for s in sub-chunk i, so the whole
// intra-chunk term is one matmul per sub-chunk and no [c, c, D] pair tensor is formed.
struct IntraChunkDecay {
  bool factored;
  at::Tensor diagonal;     // pairwise only: [..., n, S, c, c, D] exp(b_t - b_s), s <= t
  at::Tensor past;         // [..., n, S, C, D]: exp(r_i - b_s) for s before sub-chunk i
                           // (factored: up to its end), else 0
  at::Tensor from_past;    // [..., n, S, c, D]: exp(b_t - r_i) for t in sub-chunk i
  at::Tensor future;       // [..., n, S, C, D]: exp(b_t - e_j) for t after sub-chunk j
                           // (factored: exp(b_t - r_j) from its start), else 0
  at::Tensor from_future;  // [..., n, S, c, D]: exp(e_j - b_s) (factored: exp(r_j - b_s))

  // b in float64 or `dtype` (see ChunkProblem): each exponent is formed there and rounded once
  // to `dtype`, where exp runs (exp(x (1 + u)) is within |x| u of exp(x), small wherever exp(x)
  // is not).
  IntraChunkDecay(const at::Tensor& b, bool with_reverse, at::ScalarType dtype) {
    const double minus_inf = -std::numeric_limits<double>::infinity();
    const auto index_options = at::TensorOptions().device(b.device()).dtype(at::kLong);
    at::Tensor token = at::arange(kChunk, index_options);                   // [C]
    at::Tensor sub_start = at::arange(kSubChunks, index_options) * kSubChunk;  // [S]
    at::Tensor b_sub = b.unflatten(-2, {kSubChunks, kSubChunk});            // [..., n, S, c, D]
    at::Tensor ends = b_sub.select(-2, kSubChunk - 1);                      // e_i [..., n, S, D]
    at::Tensor before = at::cat({at::zeros_like(ends.narrow(-2, 0, 1)),
                                 ends.narrow(-2, 0, kSubChunks - 1)}, -2);  // r_i [..., n, S, D]
    factored = b.numel() == 0 ||
               (before - ends).max().item<double>() <= kFactoredDiagonalMaxDecay;

    // Keys visible to sub-chunk i through the factored product: s < start_i (+ c if factored).
    at::Tensor past_end = factored ? sub_start + kSubChunk : sub_start;
    at::Tensor not_past = (token.unsqueeze(0) >= past_end.unsqueeze(1)).unsqueeze(-1);  // [S,C,1]
    past = (before.unsqueeze(-2) - b.unsqueeze(-3)).masked_fill_(not_past, minus_inf).to(dtype).exp_();
    from_past = (b_sub - before.unsqueeze(-2)).to(dtype).exp_();
    at::Tensor future_reference = factored ? before : ends;
    if (with_reverse) {
      at::Tensor future_start = factored ? sub_start : sub_start + kSubChunk;
      at::Tensor not_future = (token.unsqueeze(0) < future_start.unsqueeze(1)).unsqueeze(-1);
      future = (b.unsqueeze(-3) - future_reference.unsqueeze(-2))
                   .masked_fill_(not_future, minus_inf).to(dtype).exp_();
      from_future = (future_reference.unsqueeze(-2) - b_sub).to(dtype).exp_();
    }
    if (!factored) {
      at::Tensor local = at::arange(kSubChunk, index_options);
      at::Tensor not_causal = (local.unsqueeze(0) > local.unsqueeze(1)).unsqueeze(-1);  // [c,c,1]
      diagonal = (b_sub.unsqueeze(-2) - b_sub.unsqueeze(-3)).masked_fill_(not_causal, minus_inf)
                     .to(dtype).exp_();
    }
  }
};

// [..., n, C, C] -> the S diagonal blocks [..., n, S, c, c] of a chunk matrix.
at::Tensor diagonal_blocks(const at::Tensor& matrix) {
  return matrix.unflatten(-1, {kSubChunks, kSubChunk}).unflatten(-3, {kSubChunks, kSubChunk})
      .diagonal(0, -4, -2).movedim(-1, -3);
}

// Causal scores with the decay on the contracted dim:
// M_ts = sum_d x_td y_sd exp(b_td - b_sd) for s <= t, else 0.
// x [..., n, C, D], y [..., n, C, D] (broadcastable) -> [..., n, C, C].
at::Tensor decayed_scores(const at::Tensor& x, const at::Tensor& y, const IntraChunkDecay& decay) {
  at::Tensor x_sub = x.unflatten(-2, {kSubChunks, kSubChunk});               // [..., S, c, D]
  at::Tensor y_past = y.unsqueeze(-3) * decay.past;                           // [..., S, C, D]
  at::Tensor off = at::matmul(x_sub * decay.from_past, y_past.transpose(-1, -2));  // [..., S, c, C]
  if (decay.factored) return off.flatten(-3, -2).tril_();
  at::Tensor y_sub = y.unflatten(-2, {kSubChunks, kSubChunk});
  at::Tensor diag = (x_sub.unsqueeze(-2) * y_sub.unsqueeze(-3)).mul_(decay.diagonal).sum(-1);
  at::Tensor eye = at::eye(kSubChunks, off.options()).view({kSubChunks, 1, kSubChunks, 1});
  at::Tensor blocks = off.unflatten(-1, {kSubChunks, kSubChunk}) + diag.unsqueeze(-2) * eye;
  return blocks.flatten(-4, -3).flatten(-2, -1);
}

// Causal application with the decay on the output dim:
// z_t = sum_{s <= t} M_ts y_s exp(b_t - b_s). M [..., n, C, C] causal, y [..., n, C, D].
at::Tensor decayed_apply(const at::Tensor& matrix, const at::Tensor& y,
                         const IntraChunkDecay& decay) {
  at::Tensor rows = matrix.unflatten(-2, {kSubChunks, kSubChunk});             // [..., S, c, C]
  at::Tensor off = at::matmul(rows, y.unsqueeze(-3) * decay.past).mul_(decay.from_past);
  if (decay.factored) return off.flatten(-3, -2);
  at::Tensor y_sub = y.unflatten(-2, {kSubChunks, kSubChunk});
  at::Tensor diag = (diagonal_blocks(matrix).unsqueeze(-1) * y_sub.unsqueeze(-3))
                        .mul_(decay.diagonal).sum(-2);
  return (off + diag).flatten(-3, -2);
}

// Anti-causal application with the decay on the output dim:
// z_s = sum_{t >= s} M_ts y_t exp(b_t - b_s). M [..., n, C, C] causal, y [..., n, C, D].
at::Tensor decayed_apply_reverse(const at::Tensor& matrix, const at::Tensor& y,
                                 const IntraChunkDecay& decay) {
  at::Tensor columns = matrix.transpose(-1, -2).unflatten(-2, {kSubChunks, kSubChunk});
  at::Tensor off = at::matmul(columns, y.unsqueeze(-3) * decay.future).mul_(decay.from_future);
  if (decay.factored) return off.flatten(-3, -2);
  at::Tensor y_sub = y.unflatten(-2, {kSubChunks, kSubChunk});
  at::Tensor diag = (diagonal_blocks(matrix).unsqueeze(-1) * y_sub.unsqueeze(-2))
                        .mul_(decay.diagonal).sum(-3);
  return (off + diag).flatten(-3, -2);
}

// Everything forward and backward share: inputs in chunk layout and compute dtype, decays and
// the state at the start of every chunk.
struct ChunkProblem {
  ChunkLayout layout;
  int64_t heads, groups, key_dim, value_dim;
  bool gate_on_value;
  at::Tensor q;             // [N, H, G, n, C, K], already multiplied by scale
  at::Tensor k;             // [N, H, 1, n, C, K]
  at::Tensor v;             // [N, H, 1, n, C, V]
  at::Tensor from_start;    // [N, H, 1, n, C, Dg]: exp(b_t)
  at::Tensor to_end;        // [N, H, 1, n, C, Dg]: exp(b_last - b_t)
  at::Tensor state_decay;   // [N, H, 1, n, K, 1] (gate on key) or [N, H, 1, n, 1, V]
  at::Tensor states;        // [N, H, 1, n, K, V]: state at the start of each chunk
  at::Tensor final_state;   // [N, H, K, V]
  std::optional<IntraChunkDecay> decay;

  ChunkProblem(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
               const at::Tensor& g_in, bool gate_on_value_in, double scale,
               const at::Tensor& initial_state, const at::Tensor& cu_seqlens, bool with_reverse)
      : layout(k_in.size(0), k_in.size(1), cu_seqlens),
        heads(k_in.size(2)),
        groups(q_in.size(2) / k_in.size(2)),
        key_dim(k_in.size(3)),
        value_dim(v_in.size(3)),
        gate_on_value(gate_on_value_in) {
    const at::ScalarType dtype = gla_compute_dtype(q_in, k_in, v_in, g_in);
    const int64_t sequences = layout.sequences, chunks = layout.chunks;
    q = layout.to_chunks(q_in.to(dtype) * scale)
            .view({sequences, heads, groups, chunks, kChunk, key_dim});
    k = layout.to_chunks(k_in.to(dtype)).unsqueeze(2);
    v = layout.to_chunks(v_in.to(dtype)).unsqueeze(2);
    // Cumulative log gates reach |b| ≈ 450 within a chunk under strong gates (e^-7 per step);
    // in float32 a difference b_t - b_s would then carry |b|·2^-24 ≈ 3e-5 of absolute error,
    // which exp turns into a relative error of every decay factor (measured: the float32 op was
    // 20-400x further from float64 than the float32 recurrence). Where some |b| exceeds
    // kFloat32LogGateLimit, b is summed and differenced in float64 instead, and the exponents
    // are rounded once to the compute dtype, in which exp runs; below it float32 keeps the
    // factors within about 1e-6, and the common case pays nothing for the check but one pass.
    const at::Tensor g_chunks = layout.to_chunks(g_in.to(dtype)).unsqueeze(2);
    at::Tensor b = g_chunks.cumsum(-2);                                              // [N,H,1,n,C,Dg]
    if (dtype == at::kFloat && b.numel() > 0 && b.abs().max().item<double>() > kFloat32LogGateLimit) {
      b = g_chunks.to(at::kDouble).cumsum(-2);
    }
    at::Tensor b_last = b.narrow(-2, kChunk - 1, 1);                                 // [N,H,1,n,1,Dg]
    from_start = b.to(dtype).exp();  // not exp_: .to is a no-op for float64 and b is still needed
    to_end = (b_last - b).to(dtype).exp_();
    state_decay = (gate_on_value ? b_last : b_last.transpose(-1, -2)).to(dtype).exp();
    decay.emplace(b, with_reverse, dtype);

    // Contribution of each chunk's own tokens to the state at its end.
    at::Tensor updates = gate_on_value ? at::matmul(k.transpose(-1, -2), v * to_end)
                                       : at::matmul((k * to_end).transpose(-1, -2), v);
    at::Tensor state = initial_state.defined()
                           ? initial_state.to(dtype).unsqueeze(2).clone()
                           : at::zeros({sequences, heads, 1, key_dim, value_dim}, q.options());
    states = at::empty({sequences, heads, 1, chunks, key_dim, value_dim}, q.options());
    for (int64_t n = 0; n < chunks; ++n) {
      states.select(3, n).copy_(state);
      state = state * state_decay.select(3, n) + updates.select(3, n);
    }
    final_state = state.squeeze(2);
  }

  // o [N, H, G, n, C, V] in the compute dtype.
  at::Tensor output() const {
    if (gate_on_value) {
      at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).tril_();
      return decayed_apply(scores, v, *decay) + at::matmul(q, states) * from_start;
    }
    return at::matmul(decayed_scores(q, k, *decay), v) + at::matmul(q * from_start, states);
  }

  at::Tensor to_query_heads(const at::Tensor& x) const {  // [N,H,G,n,C,D] -> [N,HQ,n,C,D]
    return x.reshape({layout.sequences, heads * groups, layout.chunks, kChunk, x.size(-1)});
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor> gla_chunk_fwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const at::Tensor& initial_state, bool output_final_state,
    const at::Tensor& cu_seqlens) {
  gla_check_inputs("lintime::gla_chunk", q, k, v, g, gate_on_value, initial_state, cu_seqlens);
  ChunkProblem problem(q, k, v, g, gate_on_value, scale, initial_state, cu_seqlens, false);
  at::Tensor o = problem.layout.from_chunks(problem.to_query_heads(problem.output()));
  return {o.to(q.scalar_type()), output_final_state ? problem.final_state : at::Tensor()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gla_chunk_bwd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
    bool gate_on_value, double scale, const at::Tensor& initial_state,
    const at::Tensor& cu_seqlens, const at::Tensor& grad_o, const at::Tensor& grad_final_state) {
  const char* op = "lintime::gla_chunk_bwd";
  gla_check_inputs(op, q, k, v, g, gate_on_value, initial_state, cu_seqlens);
  ChunkProblem p(q, k, v, g, gate_on_value, scale, initial_state, cu_seqlens, true);
  const ChunkLayout& layout = p.layout;
  const int64_t sequences = layout.sequences, chunks = layout.chunks;
  const at::ScalarType dtype = p.q.scalar_type();
  check_shape(op, "grad_o", grad_o, {{"B", q.size(0)}, {"T", q.size(1)}, {"HQ", q.size(2)},
                                     {"V", p.value_dim}});
  if (grad_final_state.defined()) {
    check_shape(op, "grad_final_state", grad_final_state,
                {{"N", sequences}, {"H", p.heads}, {"K", p.key_dim}, {"V", p.value_dim}});
  }
  at::Tensor grad_out = layout.to_chunks(grad_o.to(dtype))
                            .view({sequences, p.heads, p.groups, chunks, kChunk, p.value_dim});

  // Gradient of the state at each chunk's end, by the reverse recurrence over chunks.
  at::Tensor state_grad_updates =
      p.gate_on_value ? at::matmul(p.q.transpose(-1, -2), grad_out * p.from_start)
                      : at::matmul((p.q * p.from_start).transpose(-1, -2), grad_out);
  state_grad_updates = state_grad_updates.sum(2, /*keepdim=*/true);           // [N,H,1,n,K,V]
  at::Tensor state_grad = grad_final_state.defined()
                              ? grad_final_state.to(dtype).unsqueeze(2).clone()
                              : at::zeros({sequences, p.heads, 1, p.key_dim, p.value_dim},
                                          p.q.options());
  at::Tensor end_state_grads = at::empty_like(p.states);                       // [N,H,1,n,K,V]
  for (int64_t n = chunks - 1; n >= 0; --n) {
    end_state_grads.select(3, n).copy_(state_grad);
    state_grad = state_grad * p.state_decay.select(3, n) + state_grad_updates.select(3, n);
  }
  at::Tensor end_states = at::cat({p.states.narrow(3, 1, chunks - 1), p.final_state.unsqueeze(2)
                                                                          .unsqueeze(3)}, 3);

  const IntraChunkDecay& decay = *p.decay;
  at::Tensor grad_q, grad_k, grad_v, grad_b, state_term;
  if (p.gate_on_value) {
    at::Tensor scores = at::matmul(p.q, p.k.transpose(-1, -2)).tril_();       // [N,H,G,n,C,C]
    at::Tensor grad_scores = decayed_scores(grad_out, p.v, decay);            // [N,H,G,n,C,C]
    grad_q = at::matmul(grad_scores, p.k) +
             at::matmul(grad_out * p.from_start, p.states.transpose(-1, -2));
    grad_k = at::matmul(grad_scores.transpose(-1, -2), p.q).sum(2, true) +
             at::matmul(p.v * p.to_end, end_state_grads.transpose(-1, -2));
    grad_v = decayed_apply_reverse(scores, grad_out, decay).sum(2, true) +
             at::matmul(p.k, end_state_grads) * p.to_end;
    at::Tensor o = decayed_apply(scores, p.v, decay) + at::matmul(p.q, p.states) * p.from_start;
    grad_b = (o * grad_out).sum(2, true) - p.v * grad_v;
    state_term = (end_state_grads * end_states).sum(-2, true);                // [N,H,1,n,1,V]
  } else {
    at::Tensor scores = decayed_scores(p.q, p.k, decay);                      // [N,H,G,n,C,C]
    at::Tensor grad_scores = at::matmul(grad_out, p.v.transpose(-1, -2)).tril_();
    grad_q = decayed_apply(grad_scores, p.k, decay) +
             at::matmul(grad_out, p.states.transpose(-1, -2)) * p.from_start;
    grad_k = decayed_apply_reverse(grad_scores, p.q, decay).sum(2, true) +
             at::matmul(p.v, end_state_grads.transpose(-1, -2)) * p.to_end;
    grad_v = at::matmul(scores.transpose(-1, -2), grad_out).sum(2, true) +
             at::matmul(p.k * p.to_end, end_state_grads);
    grad_b = (p.q * grad_q).sum(2, true) - p.k * grad_k;
    state_term = (end_state_grads * end_states).sum(-1).unsqueeze(-2);        // [N,H,1,n,1,K]
  }
  // g_i enters every b_t with t >= i in its chunk and the chunk's end state.
  at::Tensor grad_g = grad_b.flip(-2).cumsum(-2).flip(-2) + state_term;

  at::Tensor grad_initial;
  if (initial_state.defined()) grad_initial = state_grad.squeeze(2).to(initial_state.scalar_type());
  return {layout.from_chunks(p.to_query_heads(grad_q * scale)).to(q.scalar_type()),
          layout.from_chunks(grad_k.squeeze(2)).to(k.scalar_type()),
          layout.from_chunks(grad_v.squeeze(2)).to(v.scalar_type()),
          layout.from_chunks(grad_g.squeeze(2)).to(g.scalar_type()), grad_initial};
}

}  // namespace lintime::ops
