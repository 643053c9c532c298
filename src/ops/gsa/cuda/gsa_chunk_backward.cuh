// Chunked GSA backward kernels (README.md, "Backward"). After the forward internals are
// recomputed (b, ok, p, pass-2 scores), each pass has an intra-chunk kernel and a state kernel
// whose CTAs take one of two roles: a forward sweep that rebuilds the state chunk by chunk and
// produces the terms that read it (dp, dq), and a reverse sweep that carries the state gradient
// from the last chunk back and produces the terms that read that (dv, dk, ds). No per-chunk
// state is ever written to memory. The gate gradient is a reverse cumulative sum over each
// sequence of per-token terms plus the final-state term, finished by three small kernels.
#pragma once

#include "ops/gsa/cuda/gsa_chunk_forward.cuh"

namespace lintime::cuda {

// Pass 2, intra-chunk: dA_ts = do_t·v_s (s <= t); dp_t = Σ_{s<=t} dA_ts s_s ⊙ exp(b_t − b_s)
// and ds_s = Σ_{t>=s} dA_ts p_t ⊙ exp(b_t − b_s) summed over the group's query heads. The s < t
// terms go into grad_probabilities_intra and grad_slot_write_intra, the weight dA_tt into
// value_score_diagonal, the s = t terms of ds into grad_slot_write_diagonal, and this pass's
// intra-chunk gate terms into gate_terms.
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) backward_values_intra_kernel(GsaParams p) {
  Chunk c;
  if (!locate_chunk(p, blockIdx.x, c)) return;
  const int h = blockIdx.y, warp = threadIdx.x / 32;
  const int H = p.heads, HQ = p.query_heads, V = p.value_dim;
  extern __shared__ __align__(16) char smem[];
  SmemCarver carve{smem};
  // do and v are read only by a group's first products; dp's intra part (fp32) reuses their memory.
  SmemCarver shared_region = carve;
  auto do_tile = carve.tile<E>(kChunk, kHeadTile);
  auto v_tile = carve.tile<E>(kChunk, kHeadTile);
  auto grad_p_sum = shared_region.tile<float>(kChunk, MP);
  carve.next = shared_region.next > carve.next ? shared_region.next : carve.next;
  auto grad_scores = carve.tile<E>(kChunk, kChunk);
  auto probabilities = carve.tile<E>(kChunk, MP);
  auto slot_write = carve.tile<E>(kChunk, MP);
  auto gates = carve.tile<float>(kChunk, MP);
  auto gate_terms = carve.tile<float>(kChunk, MP);
  auto grad_write_block = carve.tile<float>(kChunk, MP);  // ds's diagonal-block pairs
  load_token_tile<MP>(slot_write, static_cast<const E*>(p.s) + h * p.slots, int64_t{H} * p.slots,
                      c.start, c.len, 0, p.slots);
  load_gate_tile<MP>(gates, p.gate_cumsum, H, h, c.start, c.len);
  for (int i = threadIdx.x; i < kChunk * MP; i += kThreads) {
    *gate_terms.at(i / MP, i % MP) = 0.f;
    *grad_write_block.at(i / MP, i % MP) = 0.f;
  }
  float grad_write[MP / 8][4], grad_write_diagonal[MP / 8][4];
  zero(grad_write);
  zero(grad_write_diagonal);
  for (int group = 0; group < p.groups; ++group) {
    const int hq = h * p.groups + group;
    float da[8][4];
    zero(da);
    for (int v0 = 0; v0 < V; v0 += kHeadTile) {
      sync_tiles();
      load_token_tile<kHeadTile>(do_tile, static_cast<const E*>(p.grad_o) + hq * V,
                                 int64_t{HQ} * V, c.start, c.len, v0, V);
      load_token_tile<kHeadTile>(v_tile, static_cast<const E*>(p.v) + h * V, int64_t{H} * V,
                                 c.start, c.len, v0, V);
      sync_tiles();
      warp_mma<E, 8>(da, do_tile, false, warp * 16, v_tile, true, 0, kHeadTile);
    }
    load_token_tile<MP>(probabilities, static_cast<const E*>(p.probabilities) + hq * MP,
                        int64_t{HQ} * MP, c.start, c.len, 0, MP);
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = warp * 16 + acc_row(e), col = acc_col(n, e);
        *grad_scores.at(t, col) = from_float<E>(col <= t ? da[n][e] : 0.f);
      }
    }
    sync_tiles();
    const int lane = threadIdx.x & 31;
    if (lane < 16 && warp * 16 + lane < c.len) {
      const int t = warp * 16 + lane;
      p.value_score_diagonal[(c.start + int64_t{t}) * HQ + hq] = to_float(*grad_scores.at(t, t));
    }
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = warp * 16 + acc_row(e), m = acc_col(n, e);
        grad_write_diagonal[n][e] += to_float(*grad_scores.at(t, t)) * to_float(*probabilities.at(t, m));
      }
    }
    // dp's intra part: the products across 16-token blocks here, the block pairs added below.
    float grad_p[MP / 8][4];
    zero(grad_p);
    decayed_apply<E, MP, Pairs::off_block>(grad_p, grad_scores, slot_write, gates, warp);
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        *reinterpret_cast<float2*>(grad_p_sum.at(warp * 16 + acc_row(e), acc_col(n, e))) =
            make_float2(grad_p[n][e], grad_p[n][e + 1]);
      }
    }
    decayed_apply_reverse<E, MP, Pairs::off_block>(grad_write, grad_scores, probabilities, gates, warp);
    add_pair_gate_terms<E, MP>(gate_terms, grad_scores, probabilities, slot_write, gates, warp);
    diagonal_block_pairs<E, MP>(grad_scores, probabilities, slot_write, gates, warp, grad_p_sum,
                                grad_write_block, gate_terms);
    store_warp_rows<MP>(p.grad_probabilities_intra, HQ, hq, grad_p_sum, warp, c);
  }
#pragma unroll
  for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int t = warp * 16 + acc_row(e), m = acc_col(n, e);
      if (t < c.len) {
        const int64_t index = ((c.start + int64_t{t}) * H + h) * MP + m;
        *reinterpret_cast<float2*>(p.grad_slot_write_intra + index) =
            make_float2(grad_write[n][e] + *grad_write_block.at(t, m), grad_write[n][e + 1] + *grad_write_block.at(t, m + 1));
        *reinterpret_cast<float2*>(p.grad_slot_write_diagonal + index) =
            make_float2(grad_write_diagonal[n][e], grad_write_diagonal[n][e + 1]);
        *reinterpret_cast<float2*>(p.gate_terms + index) = make_float2(*gate_terms.at(t, m), *gate_terms.at(t, m + 1));
      }
    }
  }
}

// Pass 2, state. blockIdx.z = 2 sweep + role; role 0 = forward sweep (dp_t += exp(b_t) ⊙ H^v do_t),
// role 1 = reverse sweep (dv, ds, and the initial-state gradient). Phase A of segmented sweeps
// (p.sweep_local) carries the states only. 8 warps: warp w owns rows 16 (w % 4).. of every product
// (slot row tiles w % 4 + 4 i of the state, token rows of dv, dp and ds) and half of its columns
// (w / 4: value columns c0.. of the state and dv, slots m0.. of dp and ds).
template <class E, int MP>
__global__ void __launch_bounds__(kStateThreads, MP <= 64 ? 2 : 1) backward_values_state_kernel(GsaParams p) {
  constexpr int kT = kStateThreads;
  constexpr int kRowTiles = MP / 16;
  constexpr int kTilesPerWarp = (kRowTiles + 3) / 4;
  constexpr int kSlotTiles = MP / 16;  // 8-column accumulator tiles per warp: half the slots
  const int tile = blockIdx.x, h = blockIdx.y, role = blockIdx.z % 2;
  const int warp = (threadIdx.x / 32) % 4, half = threadIdx.x / 128;
  const int m0 = half * (MP / 2), c0 = half * (kHeadTile / 2);
  const int H = p.heads, HQ = p.query_heads, V = p.value_dim, M = p.slots;
  const bool local_sweep = p.sweep_local;
  const int v0 = tile * kHeadTile;
  extern __shared__ __align__(16) char smem[];
  SmemCarver carve{smem};
  auto v_tile = carve.tile<E>(kChunk, kHeadTile);
  auto do_tile = carve.tile<E>(kChunk, kHeadTile);
  auto scores = carve.tile<E>(kChunk, kChunk);
  auto decayed_p = carve.split_tile<E>(kChunk, MP);
  auto decayed_write = carve.split_tile<E>(kChunk, MP);
  auto state_operand = carve.split_tile<E>(MP, kHeadTile);
  auto chunk_decay = carve.tile<float>(1, MP);
  const Sweep w = locate_sweep(p, blockIdx.z / 2);
  const int64_t state_size = int64_t{M} * V, state_base = (int64_t{w.n} * H + h) * state_size;
  float* segment_states = role == 0 ? p.segment_states_v : p.segment_grad_states_v;
  const SweepStart from = sweep_start(p, w, role == 0 ? p.initial_state_v : p.grad_final_state_v,
                                      segment_states, h, state_size);

  // state(m, vv): H^v in the forward sweep, dH^v in the reverse sweep.
  float state[kTilesPerWarp][4][4];
  load_value_state<MP>(state, from.states, from.base, v0 + c0, V, M, warp);
  for (int step = 0; step < w.chunks; ++step) {
    const int local = w.first + (role == 0 ? step : w.chunks - 1 - step);
    const int start = w.bos + local * kChunk, len = min(kChunk, w.eos - start);
    const int chunk_id = global_chunk(p, w.n, local);
    sync_tiles();
    load_token_tile<kHeadTile, E, kT>(v_tile, static_cast<const E*>(p.v) + h * V, int64_t{H} * V, start,
                                      len, v0, V);
    load_chunk_decay<E, MP, kT>(chunk_decay, p.gate_cumsum, H, h, start, len);
    load_split_block<E, MP, kT>(decayed_write, p.decayed_write_blocks, chunk_id, H, h);
    store_value_state_operand<E, MP>(state_operand, state, warp, c0);
    if (role == 0) {
      if (local_sweep) sync_tiles();  // phase A: the state update only
      for (int group = 0; group < (local_sweep ? 0 : p.groups); ++group) {
        const int hq = h * p.groups + group;
        if (group > 0) sync_tiles();  // the previous group's readers of do_tile are done
        load_token_tile<kHeadTile, E, kT>(do_tile, static_cast<const E*>(p.grad_o) + hq * V,
                                          int64_t{HQ} * V, start, len, v0, V);
        sync_tiles();
        float grad_p[kSlotTiles][4];
        zero(grad_p);
        // Split state: these terms pair with ds terms in the gate gradient (README.md).
        warp_mma<E, kSlotTiles>(grad_p, do_tile, false, warp * 16, state_operand, true, m0, kHeadTile);
        add_slot_columns<MP>(p.grad_probabilities, grad_p, m0, warp, start, len, HQ, hq);
      }
      sync_tiles();
#pragma unroll
      for (int i = 0; i < kTilesPerWarp; ++i) {
        if (warp + 4 * i >= kRowTiles) continue;
        float update[4][4];
        zero(update);
        warp_mma<E, 4>(update, decayed_write, true, (warp + 4 * i) * 16, v_tile, false, c0, kChunk);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int m = (warp + 4 * i) * 16 + acc_row(e);
            state[i][j][e] = state[i][j][e] * *chunk_decay.at(0, m) + update[j][e];
          }
        }
      }
      continue;
    }
    // Reverse sweep: state holds dH^v at the end of this chunk. ds takes the split dH^v: its
    // terms for the last tokens cancel the final-state term of dg, computed in fp32.
    float grad_v[4][4];
    zero(grad_v);
    float state_update[kTilesPerWarp][4][4];
#pragma unroll
    for (int i = 0; i < kTilesPerWarp; ++i) zero(state_update[i]);
    for (int group = 0; group < p.groups; ++group) {
      const int hq = h * p.groups + group;
      if (group > 0) sync_tiles();  // the previous group's readers of these tiles are done
      load_token_tile<kHeadTile, E, kT>(do_tile, static_cast<const E*>(p.grad_o) + hq * V,
                                        int64_t{HQ} * V, start, len, v0, V);
      load_split_block<E, MP, kT>(decayed_p, p.decayed_probability_blocks, chunk_id, HQ, hq);
      load_block<kChunk, E, kT>(scores, static_cast<const E*>(p.value_scores) +
                                            (int64_t{chunk_id} * HQ + hq) * kChunk * kChunk);
      sync_tiles();
      if (!local_sweep) warp_mma<E, 4>(grad_v, scores, true, warp * 16, do_tile, false, c0, kChunk);
#pragma unroll
      for (int i = 0; i < kTilesPerWarp; ++i) {
        if (warp + 4 * i >= kRowTiles) continue;
        warp_mma<E, 4>(state_update[i], decayed_p, true, (warp + 4 * i) * 16, do_tile, false, c0,
                       kChunk);
      }
    }
    sync_tiles();
    if (!local_sweep) {  // phase A carries the state only
      warp_mma<E, 4>(grad_v, decayed_write, false, warp * 16, state_operand.part[0], false, c0, MP);
      store_head_tile(static_cast<E*>(p.grad_v), grad_v, warp, start, len, H, h, v0 + c0, V);
      float grad_write[kSlotTiles][4];
      zero(grad_write);
      warp_mma<E, kSlotTiles>(grad_write, v_tile, false, warp * 16, state_operand, true, m0, kHeadTile);
      add_slot_columns<MP>(p.grad_slot_write, grad_write, m0, warp, start, len, H, h);
    }
#pragma unroll
    for (int i = 0; i < kTilesPerWarp; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int m = (warp + 4 * i) * 16 + acc_row(e);
          state[i][j][e] = state[i][j][e] * *chunk_decay.at(0, m < MP ? m : 0) +
                           state_update[i][j][e];
        }
      }
    }
  }
  if (local_sweep) {
    store_value_state<MP>(state, segment_states, (int64_t{w.index} * H + h) * state_size, v0 + c0, V, M, warp);
    return;
  }
  // Forward sweep: final-state term of dg, Σ_v dH^v_T ⊙ H^v_T per slot. Reverse sweep: dH^v_0.
  if (role == 0 && p.grad_final_state_v != nullptr && w.j == p.segments - 1) {
#pragma unroll
    for (int i = 0; i < kTilesPerWarp; ++i) {
      if (warp + 4 * i >= kRowTiles) continue;
      float row_sum[2] = {0.f, 0.f};  // rows acc_row(0) and acc_row(2)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int m = (warp + 4 * i) * 16 + acc_row(e), vv = v0 + c0 + acc_col(j, e);
          if (m < M && vv < V) {
            row_sum[e / 2] += p.grad_final_state_v[state_base + int64_t{m} * V + vv] * state[i][j][e];
          }
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
      }
      const int m_low = (warp + 4 * i) * 16 + acc_row(0);
      if ((threadIdx.x & 3) == 0) {
        if (m_low < M) atomicAdd(p.gate_final + (int64_t{w.n} * H + h) * MP + m_low, row_sum[0]);
        if (m_low + 8 < M) atomicAdd(p.gate_final + (int64_t{w.n} * H + h) * MP + m_low + 8, row_sum[1]);
      }
    }
  }
  if (role == 1 && p.grad_initial_state_v != nullptr && w.j == 0) {
    store_value_state<MP>(state, p.grad_initial_state_v, state_base, v0 + c0, V, M, warp);
  }
}

// Pass 1, intra-chunk, and the softmax backward between the passes. Per query head:
// p = softmax(ok), dok = p ⊙ (dp − Σ_m p dp) (stored, element type, and used rounded from here
// on); the inter-chunk gate terms p ⊙ dp_inter + ok_inter ⊙ dok and this pass's intra-chunk
// gate terms (added to gate_terms); dA_ts = Σ_m dok_tm s_sm exp(b_tm − b_sm) (stored per chunk);
// ds_s += Σ_{t>s} (q̃_t·k_s) dok_t ⊙ exp(b_t − b_s) with q̃ = scale q (grad_slot_write_intra), and
// the s = t part into grad_slot_write_diagonal.
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) backward_keys_intra_kernel(GsaParams p) {
  Chunk c;
  if (!locate_chunk(p, blockIdx.x, c)) return;
  const int h = blockIdx.y, warp = threadIdx.x / 32;
  const int H = p.heads, HQ = p.query_heads, K = p.key_dim;
  extern __shared__ __align__(16) char smem[];
  SmemCarver carve{smem};
  auto q_tile = carve.tile<E>(kChunk, kHeadTile);
  auto k_tile = carve.tile<E>(kChunk, kHeadTile);
  auto scores = carve.tile<E>(kChunk, kChunk);
  auto grad_ok = carve.tile<E>(kChunk, MP);
  auto slot_write = carve.tile<E>(kChunk, MP);
  auto gates = carve.tile<float>(kChunk, MP);
  auto gate_terms = carve.tile<float>(kChunk, MP);
  auto grad_write_block = carve.tile<float>(kChunk, MP);  // ds's diagonal-block pairs
  load_token_tile<MP>(slot_write, static_cast<const E*>(p.s) + h * p.slots, int64_t{H} * p.slots,
                      c.start, c.len, 0, p.slots);
  load_gate_tile<MP>(gates, p.gate_cumsum, H, h, c.start, c.len);
  for (int i = threadIdx.x; i < kChunk * MP; i += kThreads) {
    *gate_terms.at(i / MP, i % MP) = 0.f;
    *grad_write_block.at(i / MP, i % MP) = 0.f;
  }
  sync_tiles();
  float grad_write[MP / 8][4], grad_write_diagonal[MP / 8][4];
  zero(grad_write);
  zero(grad_write_diagonal);
  const E* p_stored = static_cast<const E*>(p.probabilities);
  E* dok_out = static_cast<E*>(p.grad_slot_scores);
  for (int group = 0; group < p.groups; ++group) {
    const int hq = h * p.groups + group;
    for (int pass = 0; pass < kSubChunk / kRowsPerPass; ++pass) {
      constexpr int N = MP / kRowLanes;
      const RowSegment<MP> seg(warp, pass);
      const int r = seg.row;
      const bool valid = r < c.len;
      const int64_t token_head = (c.start + int64_t{r}) * HQ + hq, row = token_head * MP + seg.m0;
      float prob[N];
      slot_score_segment<E, MP>(prob, p, token_head * MP, valid,
                                valid ? p.key_score_diagonal[token_head] : 0.f, slot_write, gates, seg);
      softmax_segment(prob, seg.m0, p.slots);
      // dp in its three parts: inter-chunk (the state kernel leaves its decay exp(b_t) to here),
      // intra-chunk s < t, and the s = t term value_diagonal · s_t.
      float grad[N], full[N];
      float dot = 0.f;
      if (valid) {
        float intra[N];
        load_row_floats<N>(grad, p.grad_probabilities + row);
        load_row_floats<N>(intra, p.grad_probabilities_intra + row);
        const float value_diagonal = p.value_score_diagonal[token_head];
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const int m = seg.m0 + j;
          grad[j] *= decay_exp<E>(*gates.at(r, m));
          full[j] = grad[j] + intra[j] + value_diagonal * to_float(*slot_write.at(r, m));
          dot += prob[j] * full[j];
        }
      }
      dot = row_sum(dot);
      E dok[N];
      if (valid) {
        E stored[N];
#pragma unroll
        for (int j = 0; j < N; ++j) stored[j] = p_stored[row + j];
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const int m = seg.m0 + j;
          dok[j] = from_float<E>(prob[j] * (full[j] - dot));
          const float ok_inter = inter_slot_score<E>(p.slot_scores[row + j], *gates.at(r, m));
          *gate_terms.at(r, m) += to_float(stored[j]) * grad[j] + ok_inter * to_float(dok[j]);
        }
        store_row(dok_out + row, dok);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) dok[j] = from_float<E>(0.f);
      }
      store_row(grad_ok.at(r, seg.m0), dok);
    }
    __syncwarp();
    store_decayed_rows<E, MP, false>(grad_ok, gates, c.len - 1, p.decayed_grad_score_blocks, c.id, HQ, hq,
                                     SplitTile<E>::kParts, warp);
    float grad_scores[8][4];
    decayed_scores<E, MP>(grad_scores, grad_ok, slot_write, gates, warp);
    E* out = static_cast<E*>(p.grad_key_scores) + (int64_t{c.id} * HQ + hq) * kChunk * kChunk;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      if (n / 2 == warp) continue;  // the diagonal block: store_diagonal_block_scores
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        out[(warp * 16 + acc_row(e)) * kChunk + acc_col(n, e)] = from_float<E>(grad_scores[n][e]);
      }
    }
    store_diagonal_block_scores<E, MP>(out, grad_ok, slot_write, gates, warp);
    float qk[8][4];
    zero(qk);
    for (int k0 = 0; k0 < K; k0 += kHeadTile) {
      sync_tiles();
      load_token_tile<kHeadTile>(q_tile, static_cast<const E*>(p.q) + hq * K, int64_t{HQ} * K,
                                 c.start, c.len, k0, K);
      load_token_tile<kHeadTile>(k_tile, static_cast<const E*>(p.k) + h * K, int64_t{H} * K,
                                 c.start, c.len, k0, K);
      sync_tiles();
      warp_mma<E, 8>(qk, q_tile, false, warp * 16, k_tile, true, 0, kHeadTile);
    }
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = warp * 16 + acc_row(e), col = acc_col(n, e);
        *scores.at(t, col) = from_float<E>(col <= t ? qk[n][e] * p.scale : 0.f);
      }
    }
    sync_tiles();
    add_pair_gate_terms<E, MP>(gate_terms, scores, grad_ok, slot_write, gates, warp);
    decayed_apply_reverse<E, MP, Pairs::off_block>(grad_write, scores, grad_ok, gates, warp);
    diagonal_block_pairs<E, MP>(scores, grad_ok, slot_write, gates, warp, SmemTile<float>{nullptr, 0},
                                grad_write_block, gate_terms);
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = warp * 16 + acc_row(e), m = acc_col(n, e);
        const float diagonal = t < c.len ? p.key_score_diagonal[(c.start + int64_t{t}) * HQ + hq] : 0.f;
        grad_write_diagonal[n][e] += diagonal * to_float(*grad_ok.at(t, m));
      }
    }
    sync_tiles();
  }
#pragma unroll
  for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int t = warp * 16 + acc_row(e), m = acc_col(n, e);
      if (t < c.len) {
        const int64_t index = ((c.start + int64_t{t}) * H + h) * MP + m;
        p.grad_slot_write_intra[index] += grad_write[n][e] + *grad_write_block.at(t, m);
        p.grad_slot_write_diagonal[index] += grad_write_diagonal[n][e];
        p.gate_terms[index] += *gate_terms.at(t, m);
      }
    }
  }
}

// Pass 1, state. blockIdx.z = 2 sweep + role; role 0 = forward sweep (dq), role 1 = reverse sweep
// (dk, ds, and the initial-state gradient). Phase A of segmented sweeps (p.sweep_local) carries
// the states only.
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) backward_keys_state_kernel(GsaParams p) {
  const int tile = blockIdx.x, h = blockIdx.y, role = blockIdx.z % 2;
  const int warp = threadIdx.x / 32;
  const int H = p.heads, HQ = p.query_heads, K = p.key_dim, M = p.slots;
  const int k0 = tile * kHeadTile;
  const bool local_sweep = p.sweep_local;
  extern __shared__ __align__(16) char smem[];
  SmemCarver carve{smem};
  auto q_tile = carve.tile<E>(kChunk, kHeadTile);
  auto k_tile = carve.tile<E>(kChunk, kHeadTile);
  auto grad_scores = carve.tile<E>(kChunk, kChunk);
  // The forward sweep (dq) takes dok and the state rounded once; the reverse sweep splits them
  // (the state gradient's recurrence, and ds, whose terms cancel the final-state term of dg).
  const int parts = role == 0 ? 1 : SplitTile<E>::kParts;
  auto decayed_grad_ok = carve.split_tile_reserved<E>(kChunk, MP, parts);
  auto decayed_write = carve.split_tile<E>(kChunk, MP);
  auto state_operand = carve.split_tile_reserved<E>(kHeadTile, MP, parts);
  auto chunk_decay = carve.tile<float>(1, MP);
  const Sweep w = locate_sweep(p, blockIdx.z / 2);
  const int64_t state_size = int64_t{K} * M, state_base = (int64_t{w.n} * H + h) * state_size;
  float* segment_states = role == 0 ? p.segment_states_k : p.segment_grad_states_k;
  const SweepStart from = sweep_start(p, w, role == 0 ? p.initial_state_k : p.grad_final_state_k,
                                      segment_states, h, state_size);

  // Loads overlap the products: the group loop's tiles (dok ⊙ e^b, the score gradients, q) of the
  // next chunk are loaded during this chunk's state update, and this chunk's update operands (k,
  // the decayed write, b_L) during the reverse sweep's group loop (the forward sweep's dq products
  // read k, so it waits for them). Single buffers: each is reloaded after its last reader. (The
  // same in the value pass measured 0.484 → 0.470 ms at the 1.3B shape and 0.631 → 0.667 at the
  // 16-head shape; not kept there.)
  const bool group_loop = !(local_sweep && role == 0);  // phase A's forward sweep needs no query-side tiles
  auto chunk_of_step = [&](int step) { return w.first + (role == 0 ? step : w.chunks - 1 - step); };
  auto load_group_operands = [&](int step, int hq) {
    const int local = chunk_of_step(step);
    const int start = w.bos + local * kChunk, len = min(kChunk, w.eos - start);
    const int chunk_id = global_chunk(p, w.n, local);
    load_split_block<E, MP>(decayed_grad_ok, p.decayed_grad_score_blocks, chunk_id, HQ, hq);
    if (!local_sweep) {
      load_block<kChunk>(grad_scores, static_cast<const E*>(p.grad_key_scores) +
                                          (int64_t{chunk_id} * HQ + hq) * kChunk * kChunk);
    }
    if (role == 1) {
      load_token_tile<kHeadTile>(q_tile, static_cast<const E*>(p.q) + hq * K, int64_t{HQ} * K, start, len, k0, K);
    }
    commit_copies();
  };

  // state(kk, m): H^k in the forward sweep, dH^k in the reverse sweep.
  float state[MP / 8][4];
  load_key_state<MP>(state, from.states, from.base, k0, K, M, warp);
  if (group_loop && w.chunks > 0) load_group_operands(0, h * p.groups);
  for (int step = 0; step < w.chunks; ++step) {
    const int local = chunk_of_step(step);
    const int start = w.bos + local * kChunk, len = min(kChunk, w.eos - start);
    __syncthreads();  // the last chunk's readers of k, the decayed write, b_L and the state operand are done
    load_token_tile<kHeadTile>(k_tile, static_cast<const E*>(p.k) + h * K, int64_t{H} * K, start,
                               len, k0, K);
    load_chunk_decay_async<MP>(chunk_decay, p.gate_cumsum, H, h, start, len);
    load_split_block<E, MP>(decayed_write, p.decayed_write_blocks, global_chunk(p, w.n, local), H, h);
    commit_copies();
    store_state_operand<E, MP>(state_operand, state, warp);
    if (role == 0) wait_copies<0>(); else wait_copies<1>();
    __syncthreads();
    float grad_k[8][4];
    zero(grad_k);
    float state_update[MP / 8][4];
    zero(state_update);
    for (int group = 0; group < (group_loop ? p.groups : 0); ++group) {
      const int hq = h * p.groups + group;
      if (group > 0) {  // this query head's tiles, loaded now
        __syncthreads();  // the previous group's readers of these tiles are done
        load_group_operands(step, hq);
        wait_copies<0>();
        __syncthreads();
      }
      if (role == 0) {
        float grad_q[8][4];
        zero(grad_q);
        warp_mma<E, 8>(grad_q, decayed_grad_ok, false, warp * 16, state_operand.part[0], true, 0, MP);
        warp_mma<E, 8>(grad_q, grad_scores, false, warp * 16, k_tile, false, 0, kChunk);
        store_head_tile(static_cast<E*>(p.grad_q), grad_q, warp, start, len, HQ, hq, k0, K, p.scale);
      } else {
        if (!local_sweep) warp_mma<E, 8>(grad_k, grad_scores, true, warp * 16, q_tile, false, 0, kChunk);
        warp_mma<E, MP / 8>(state_update, q_tile, true, warp * 16, decayed_grad_ok, false, 0, kChunk);
      }
    }
    wait_copies<0>();
    __syncthreads();  // the update operands have landed; the group loop's readers are done
    exp_chunk_decay<E, MP>(chunk_decay);
    if (group_loop && step + 1 < w.chunks) load_group_operands(step + 1, h * p.groups);
    __syncthreads();  // exp(b_L) visible
    if (role == 0) {
      float update[MP / 8][4];
      zero(update);
      warp_mma<E, MP / 8>(update, k_tile, true, warp * 16, decayed_write, false, 0, kChunk);
#pragma unroll
      for (int j = 0; j < MP / 8; ++j) {
        const float2 decay = column_decay_pair(chunk_decay, j);
#pragma unroll
        for (int e = 0; e < 4; ++e) state[j][e] = state[j][e] * (e & 1 ? decay.y : decay.x) + update[j][e];
      }
      continue;
    }
    if (!local_sweep) {  // phase A carries the state only
      // Reverse sweep: dk = scale dA^T q + (s ⊙ exp(b_L − b)) dH^k^T; ds += exp(b_L − b) ⊙ k dH^k.
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) grad_k[j][e] *= p.scale;
      }
      warp_mma<E, 8>(grad_k, decayed_write, false, warp * 16, state_operand.part[0], true, 0, MP);
      store_head_tile(static_cast<E*>(p.grad_k), grad_k, warp, start, len, H, h, k0, K);
      float grad_write[MP / 8][4];
      zero(grad_write);
      warp_mma<E, MP / 8>(grad_write, k_tile, false, warp * 16, state_operand, false, 0, kHeadTile);
      add_slot_tile<MP>(p.grad_slot_write, grad_write, warp, start, len, H, h);
    }
#pragma unroll
    for (int j = 0; j < MP / 8; ++j) {
      const float2 decay = column_decay_pair(chunk_decay, j);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        state[j][e] = state[j][e] * (e & 1 ? decay.y : decay.x) + p.scale * state_update[j][e];
      }
    }
  }
  if (local_sweep) {
    store_key_state<MP>(state, segment_states, (int64_t{w.index} * H + h) * state_size, k0, K, M, warp);
    return;
  }
  if (role == 0 && p.grad_final_state_k != nullptr && w.j == p.segments - 1) {
    // Σ_kk dH^k_T ⊙ H^k_T per slot m: columns live in one lane each, rows across lanes/warps.
#pragma unroll
    for (int j = 0; j < MP / 8; ++j) {
      float column_sum[2] = {0.f, 0.f};  // columns acc_col(j, 0) and acc_col(j, 1)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kk = k0 + warp * 16 + acc_row(e), m = acc_col(j, e);
        if (kk < K && m < M) column_sum[e & 1] += p.grad_final_state_k[state_base + int64_t{kk} * M + m] * state[j][e];
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
#pragma unroll
        for (int offset = 4; offset < 32; offset *= 2) {
          column_sum[r] += __shfl_xor_sync(0xffffffffu, column_sum[r], offset);
        }
      }
      if ((threadIdx.x & 31) < 4) {
        const int m = acc_col(j, 0);
        if (m < M) atomicAdd(p.gate_final + (int64_t{w.n} * H + h) * MP + m, column_sum[0]);
        if (m + 1 < M) atomicAdd(p.gate_final + (int64_t{w.n} * H + h) * MP + m + 1, column_sum[1]);
      }
    }
  }
  if (role == 1 && p.grad_initial_state_k != nullptr && w.j == 0) {
#pragma unroll
    for (int j = 0; j < MP / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kk = k0 + warp * 16 + acc_row(e), m = acc_col(j, e);
        if (kk < K && m < M) p.grad_initial_state_k[state_base + int64_t{kk} * M + m] = state[j][e];
      }
    }
  }
}

// Segment-parallel sweeps, between phases A and B: each segment's local end state (swept from
// zero) becomes its start state: carry = boundary; for each segment in sweep order, start = carry,
// carry = carry ⊙ D + local, with D = exp(Σ b_L) over the segment's chunks, the state's decay
// across the segment. States [N S, H, rows, cols]; the decay is on the columns (H^k, kSlotColumns)
// or on the rows (H^v). kReverse: the state gradients, swept from the sequence end; boundary is
// the initial state or the final-state gradient (null: zero). Grid (element blocks, H, N).
template <int MP, bool kSlotColumns, bool kReverse>
__global__ void __launch_bounds__(kThreads) segment_scan_kernel(GsaParams p, float* states,
                                                                const float* boundary, int rows, int cols) {
  const int h = blockIdx.y, n = blockIdx.z, H = p.heads, S = p.segments;
  const int64_t size = int64_t{rows} * cols, element = int64_t{blockIdx.x} * kThreads + threadIdx.x;
  if (element >= size) return;
  const int m = kSlotColumns ? static_cast<int>(element % cols) : static_cast<int>(element / cols);
  float carry = boundary != nullptr ? boundary[(int64_t{n} * H + h) * size + element] : 0.f;
  for (int i = 0; i < S; ++i) {
    const int j = kReverse ? S - 1 - i : i;
    const Sweep w = locate_sweep(p, n * S + j);
    double log_decay = 0.0;
    for (int local = w.first; local < w.first + w.chunks; ++local) {
      const int last = min(w.bos + (local + 1) * kChunk, w.eos) - 1;
      log_decay += p.gate_cumsum[(int64_t{last} * H + h) * MP + m];
    }
    float* slot = states + (int64_t{w.index} * H + h) * size + element;
    const float local_state = *slot;
    *slot = carry;
    carry = carry * expf(static_cast<float>(log_decay)) + local_state;
  }
}

// An output element stored as fp32 or, when in_element_type, rounded to the element type.
template <class E>
__device__ __forceinline__ void store_float_or_element(void* dst, bool in_element_type, int64_t index, float value) {
  if (in_element_type) {
    static_cast<E*>(dst)[index] = from_float<E>(value);
  } else {
    static_cast<float*>(dst)[index] = value;
  }
}

// dg, step 1 (per chunk): x_t = gate_terms_t − s_t ⊙ ds_inter_t, its reverse cumulative sum
// inside the chunk (written back into gate_terms) and the chunk total; ds (all three parts) is
// written out (fp32, M slots).
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) gate_grad_chunk_kernel(GsaParams p) {
  Chunk c;
  if (!locate_chunk(p, blockIdx.x, c)) return;
  const int h = blockIdx.y, m = threadIdx.x;
  if (m >= p.slots) return;
  const E* s = static_cast<const E*>(p.s);
  const float b_last = p.gate_cumsum[((c.start + int64_t{c.len} - 1) * p.heads + h) * MP + m];
  // The terms cancel in large part (README.md, "Gate gradient"): their difference and sum are
  // formed in fp64 and rounded once.
  double sum = 0.0;
  constexpr int kBatch = kRowBatch / 2;  // six loads per row
  for (int r_end = c.len; r_end > 0; r_end -= kBatch) {  // rows [r_end - kBatch, r_end), last first
    float terms[kBatch], inter[kBatch], b[kBatch], write[kBatch], intra[kBatch], diagonal[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int r = r_end - 1 - i;
      const int64_t token = c.start + r, index = (token * p.heads + h) * MP + m;
      const bool valid = r >= 0;
      terms[i] = valid ? p.gate_terms[index] : 0.f;
      inter[i] = valid ? p.grad_slot_write[index] : 0.f;
      b[i] = valid ? p.gate_cumsum[index] : 0.f;
      write[i] = valid ? to_float(s[(token * p.heads + h) * p.slots + m]) : 0.f;
      intra[i] = valid ? p.grad_slot_write_intra[index] : 0.f;
      diagonal[i] = valid ? p.grad_slot_write_diagonal[index] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int r = r_end - 1 - i;
      if (r < 0) break;
      const int64_t token = c.start + r, index = (token * p.heads + h) * MP + m;
      // The state kernels leave the decay exp(b_L − b_t) of ds's inter-chunk part to here.
      const float ds = inter[i] * decay_exp<E>(b_last - b[i]);
      sum += static_cast<double>(terms[i]) - static_cast<double>(write[i]) * ds;
      p.gate_terms[index] = static_cast<float>(sum);
      store_float_or_element<E>(p.grad_s, p.grad_s_in_element_type, (token * p.heads + h) * p.slots + m,
                                ds + intra[i] + diagonal[i]);
    }
  }
  p.chunk_totals[(int64_t{c.id} * p.heads + h) * MP + m] = static_cast<float>(sum);
}

// dg, step 2 (per sequence and head): chunk_totals[c] <- final-state term + Σ of the totals of
// the later chunks of the sequence.
template <int MP>
__global__ void gate_grad_carry_kernel(GsaParams p) {
  const int n = blockIdx.x, h = blockIdx.y, m = threadIdx.x;
  if (m >= p.slots) return;
  int bos, eos;
  sequence_bounds(p, n, bos, eos);
  double carry = p.gate_final[(int64_t{n} * p.heads + h) * MP + m];  // fp64: see gate_grad_chunk
  for (int local = chunks_of(eos - bos) - 1; local >= 0; --local) {
    float* total = p.chunk_totals + (int64_t{global_chunk(p, n, local)} * p.heads + h) * MP + m;
    const float own = *total;
    *total = static_cast<float>(carry);
    carry += own;
  }
}

// dg, step 3 (per chunk): dg_t = local reverse sum + carry of the chunk.
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) gate_grad_finish_kernel(GsaParams p) {
  Chunk c;
  if (!locate_chunk(p, blockIdx.x, c)) return;
  const int h = blockIdx.y, m = threadIdx.x;
  if (m >= p.slots) return;
  const float carry = p.chunk_totals[(int64_t{c.id} * p.heads + h) * MP + m];
  for (int r0 = 0; r0 < c.len; r0 += kRowBatch) {
    float local[kRowBatch];
#pragma unroll
    for (int i = 0; i < kRowBatch; ++i) {
      local[i] = r0 + i < c.len ? p.gate_terms[((c.start + int64_t{r0} + i) * p.heads + h) * MP + m] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < kRowBatch; ++i) {
      if (r0 + i >= c.len) break;
      store_float_or_element<E>(p.grad_g, p.grad_g_in_element_type,
                                ((c.start + int64_t{r0} + i) * p.heads + h) * p.slots + m, local[i] + carry);
    }
  }
}

}  // namespace lintime::cuda
