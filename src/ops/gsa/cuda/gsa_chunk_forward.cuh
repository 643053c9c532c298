// Chunked GSA forward kernels (README.md, "Forward"). Pass 1 (keys, gate on the slot/value side)
// and pass 2 (values, gate on the slot/key side) each split into
//   an intra-chunk kernel, parallel over (chunk, head): the C x C products inside a chunk;
//   a state kernel, parallel over (head-dim tile, head, sequence), walking its sequence chunk by
//   chunk with its tile of the state in registers: the products with the state at the chunk
//   start, then the state update. States never leave the chip except as the final state.
#pragma once

#include "ops/gsa/cuda/gsa_common.cuh"

namespace lintime::cuda {

// chunk_offsets[n] = number of chunks before sequence n (varlen only). One thread: N is small.
static __global__ void chunk_offsets_kernel(GsaParams p) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int total = 0;
  for (int n = 0; n < p.num_sequences; ++n) {
    p.chunk_offsets[n] = total;
    total += chunks_of(p.cu_seqlens[n + 1] - p.cu_seqlens[n]);
  }
  p.chunk_offsets[p.num_sequences] = total;
}

// b = cumulative sum of g inside each chunk, fp32 [tok, H, MP] (0 in the padding slots).
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) gate_cumsum_kernel(GsaParams p) {
  Chunk c;
  if (!locate_chunk(p, blockIdx.x, c)) return;
  const int h = blockIdx.y, m = threadIdx.x;
  if (m >= MP) return;
  double sum = 0.0;  // rounded once per token: the decays exp(b_t − b_s) inherit b's error
  for (int r = 0; r < c.len; ++r) {  // (batched loads measured slower here: 0.24 -> 0.30 ms, 16-head shape)
    const int64_t token = c.start + r;
    if (m < p.slots) sum += gate_at<E>(p, (token * p.heads + h) * p.slots + m);
    p.gate_cumsum[(token * p.heads + h) * MP + m] = static_cast<float>(sum);
  }
}

// Pass 1, intra-chunk: ok_t = scale Σ_{s<=t} (q_t·k_s) s_s ⊙ exp(b_t − b_s). The s < t terms go
// into slot_scores_intra, the s = t term's weight scale q_t·k_t, rounded as the products use it,
// into key_score_diagonal (the state kernel adds the inter-chunk part into slot_scores).
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) forward_keys_intra_kernel(GsaParams p) {
  Chunk c;
  if (!locate_chunk(p, blockIdx.x, c)) return;
  const int h = blockIdx.y, warp = threadIdx.x / 32;
  const int H = p.heads, HQ = p.query_heads, K = p.key_dim;
  extern __shared__ __align__(16) char smem[];
  SmemCarver carve{smem};
  auto q_tile = carve.tile<E>(kChunk, kHeadTile);
  auto k_tile = carve.tile<E>(kChunk, kHeadTile);
  auto scores = carve.tile<E>(kChunk, kChunk);
  auto slot_write = carve.tile<E>(kChunk, MP);
  auto gates = carve.tile<float>(kChunk, MP);
  auto ok_sum = carve.tile<float>(kChunk, MP);
  const E* s = static_cast<const E*>(p.s);
  load_token_tile<MP>(slot_write, s + h * p.slots, int64_t{H} * p.slots, c.start, c.len, 0, p.slots);
  load_gate_tile<MP>(gates, p.gate_cumsum, H, h, c.start, c.len);

  for (int group = 0; group < p.groups; ++group) {
    const int hq = h * p.groups + group;
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
    __syncwarp();
    const int lane = threadIdx.x & 31;
    if (lane < 16 && warp * 16 + lane < c.len) {
      const int t = warp * 16 + lane;
      p.key_score_diagonal[(c.start + int64_t{t}) * HQ + hq] = to_float(*scores.at(t, t));
    }
    // ok's intra part: the products across 16-token blocks, then the block pairs one by one.
    float ok[MP / 8][4];
    zero(ok);
    decayed_apply<E, MP, Pairs::off_block>(ok, scores, slot_write, gates, warp);
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        *reinterpret_cast<float2*>(ok_sum.at(warp * 16 + acc_row(e), acc_col(n, e))) =
            make_float2(ok[n][e], ok[n][e + 1]);
      }
    }
    diagonal_block_pairs<E, MP, false>(scores, slot_write, slot_write, gates, warp, ok_sum,
                                       SmemTile<float>{nullptr, 0}, SmemTile<float>{nullptr, 0});
    store_warp_rows<MP>(p.slot_scores_intra, HQ, hq, ok_sum, warp, c);
  }
  store_decayed_rows<E, MP, true>(slot_write, gates, c.len - 1, p.decayed_write_blocks, c.id, H, h,
                                  SplitTile<E>::kParts, warp);
}

// A key-state tile in registers (rows k0 + 16 warp + acc_row of H^k [K, M], the 8 NT columns
// m0 + acc_col) from states + base (null: zeros) and back.
template <int NT>
__device__ __forceinline__ void load_key_columns(float (&state)[NT][4], const float* states, int64_t base,
                                                 int k0, int K, int M, int warp, int m0) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int kk = k0 + warp * 16 + acc_row(e), m = m0 + acc_col(j, e);
      state[j][e] = (states != nullptr && kk < K && m < M) ? states[base + int64_t{kk} * M + m] : 0.f;
    }
  }
}
template <int NT>
__device__ __forceinline__ void store_key_columns(const float (&state)[NT][4], float* states, int64_t base,
                                                  int k0, int K, int M, int warp, int m0) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int kk = k0 + warp * 16 + acc_row(e), m = m0 + acc_col(j, e);
      if (kk < K && m < M) states[base + int64_t{kk} * M + m] = state[j][e];
    }
  }
}
// All MP columns.
template <int MP>
__device__ __forceinline__ void load_key_state(float (&state)[MP / 8][4], const float* states, int64_t base,
                                               int k0, int K, int M, int warp) {
  load_key_columns(state, states, base, k0, K, M, warp, 0);
}
template <int MP>
__device__ __forceinline__ void store_key_state(const float (&state)[MP / 8][4], float* states, int64_t base,
                                                int k0, int K, int M, int warp) {
  store_key_columns(state, states, base, k0, K, M, warp, 0);
}

// A value-state tile in registers (rows m = 16 (warp + 4 i) + acc_row of H^v [M, V], the 8 NT
// columns v0 + acc_col) from states + base (null: zeros) and back.
template <int MP, int NT>
__device__ __forceinline__ void load_value_state(float (&state)[(MP / 16 + 3) / 4][NT][4], const float* states,
                                                 int64_t base, int v0, int V, int M, int warp) {
#pragma unroll
  for (int i = 0; i < (MP / 16 + 3) / 4; ++i) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int m = (warp + 4 * i) * 16 + acc_row(e), vv = v0 + acc_col(j, e);
        state[i][j][e] = (states != nullptr && m < M && vv < V) ? states[base + int64_t{m} * V + vv] : 0.f;
      }
    }
  }
}
template <int MP, int NT>
__device__ __forceinline__ void store_value_state(const float (&state)[(MP / 16 + 3) / 4][NT][4], float* states,
                                                  int64_t base, int v0, int V, int M, int warp) {
#pragma unroll
  for (int i = 0; i < (MP / 16 + 3) / 4; ++i) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int m = (warp + 4 * i) * 16 + acc_row(e), vv = v0 + acc_col(j, e);
        if (m < M && vv < V) states[base + int64_t{m} * V + vv] = state[i][j][e];
      }
    }
  }
}

// The state tile (registers, accumulator layout: rows 16 warp + acc_row, columns m0 + acc_col) as
// a split matrix operand in shared memory.
template <class E, int NT>
__device__ __forceinline__ void store_state_columns(const SplitTile<E>& dst, const float (&state)[NT][4],
                                                    int warp, int m0) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      dst.store2(warp * 16 + acc_row(e), m0 + acc_col(j, e), state[j][e], state[j][e + 1]);
    }
  }
}
template <class E, int MP>
__device__ __forceinline__ void store_state_operand(const SplitTile<E>& dst, const float (&state)[MP / 8][4],
                                                    int warp) {
  store_state_columns<E>(dst, state, warp, 0);
}

// The value-state tile [MP, 64] (row tiles warp + 4 i, columns c0 + 8 NT) as a split matrix operand.
template <class E, int MP, int NT>
__device__ __forceinline__ void store_value_state_operand(const SplitTile<E>& dst,
                                                          const float (&state)[(MP / 16 + 3) / 4][NT][4],
                                                          int warp, int c0 = 0) {
#pragma unroll
  for (int i = 0; i < (MP / 16 + 3) / 4; ++i) {
    if (warp + 4 * i >= MP / 16) continue;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        dst.store2((warp + 4 * i) * 16 + acc_row(e), c0 + acc_col(j, e), state[i][j][e], state[i][j][e + 1]);
      }
    }
  }
}

// One (chunk, head) of a chunk-blocked split operand into a split tile (cp.async).
template <class E, int MP, int kCtaThreads = kThreads>
__device__ __forceinline__ void load_split_block(const SplitTile<E>& dst, const void* blocks, int64_t chunk,
                                                 int heads_x, int hx) {
  constexpr int kParts = SplitTile<E>::kParts;
  const E* src = static_cast<const E*>(blocks) + (chunk * heads_x + hx) * kParts * kChunk * MP;
#pragma unroll
  for (int i = 0; i < kParts; ++i) {
    if (i < dst.parts) load_block<MP, E, kCtaThreads>(dst.part[i], src + i * kChunk * MP);
  }
}

// Pass 1, state: for one 64-row tile of H^k [K, M] of one (sequence, head), chunk by chunk:
// ok_t += scale (q_t^T H^k) (slot_scores: its consumers apply the decay exp(b_t)); H^k <- H^k Diag(exp(b_L)) + k^T (s ⊙ exp(b_L − b)).
// kSplitState: the products with H^k take it split in three parts (the backward's recomputation,
// whose ok pairs with ds in the gate gradient); the forward takes it rounded once.
// The next chunk's tiles (k, the decayed write, b_L and, where shared memory allows two CTAs per
// SM, the first query head's q) are loaded into a second buffer while the current chunk's
// products run: a chunk step no longer starts with a round trip to memory.
template <class E, int MP, bool kSplitState>
__global__ void __launch_bounds__(kThreads) forward_keys_state_kernel(GsaParams p) {
  constexpr bool kPrefetchQuery = !kSplitState;  // the split state operand leaves no room for two q tiles
  const int tile = blockIdx.x, h = blockIdx.y, warp = threadIdx.x / 32;
  const int H = p.heads, HQ = p.query_heads, K = p.key_dim, M = p.slots;
  const int k0 = tile * kHeadTile;
  extern __shared__ __align__(16) char smem[];
  SmemCarver carve{smem};
  // Buffer 0 of the prefetched tiles (buffers.select picks one).
  const char* const buffer_start = carve.next;
  const SmemTile<E> k_base = carve.tile<E>(kChunk, kHeadTile);
  const SplitTile<E> write_base = carve.split_tile<E>(kChunk, MP);
  const SmemTile<E> q_base = kPrefetchQuery ? carve.tile<E>(kChunk, kHeadTile) : SmemTile<E>{nullptr, 0};
  const SmemTile<float> decay_base = carve.tile<float>(1, MP);
  const DoubleBuffer buffers = carve.repeat_from(buffer_start);
  const SmemTile<E> q_single = kPrefetchQuery ? SmemTile<E>{nullptr, 0} : carve.tile<E>(kChunk, kHeadTile);
  auto state_operand = carve.split_tile<E>(kHeadTile, MP, kSplitState ? SplitTile<E>::kParts : 1);
  const Sweep w = locate_sweep(p, blockIdx.z);
  const int64_t state_size = int64_t{K} * M;
  const SweepStart from = sweep_start(p, w, p.initial_state_k, p.segment_states_k, h, state_size);
  const E* q = static_cast<const E*>(p.q);
  auto chunk_start = [&](int step) { return w.bos + (w.first + step) * kChunk; };
  auto issue = [&](int step, bool second) {
    const int start = chunk_start(step), len = min(kChunk, w.eos - start);
    load_token_tile<kHeadTile>(buffers.select(k_base, second), static_cast<const E*>(p.k) + h * K, int64_t{H} * K,
                               start, len, k0, K);
    load_chunk_decay_async<MP>(buffers.select(decay_base, second), p.gate_cumsum, H, h, start, len);
    load_split_block<E, MP>(buffers.select(write_base, second), p.decayed_write_blocks,
                            global_chunk(p, w.n, w.first + step), H, h);
    if (kPrefetchQuery && !p.sweep_local) {
      load_token_tile<kHeadTile>(buffers.select(q_base, second), q + h * p.groups * K, int64_t{HQ} * K, start,
                                 len, k0, K);
    }
    commit_copies();
  };

  // state(kk, m) for kk = 16 warp + acc_row, m = acc_col.
  float state[MP / 8][4];
  load_key_state<MP>(state, from.states, from.base, k0, K, M, warp);
  if (w.chunks > 0) issue(0, false);
  for (int step = 0; step < w.chunks; ++step) {
    const bool second = step & 1;
    const int start = chunk_start(step), len = min(kChunk, w.eos - start);
    wait_copies<0>();
    __syncthreads();  // this chunk's tiles have landed; the last chunk's readers of the other buffer are done
    if (!kPrefetchQuery && !p.sweep_local) {  // the first query head's q, ahead of the prefetch (waited for below)
      load_token_tile<kHeadTile>(q_single, q + h * p.groups * K, int64_t{HQ} * K, start, len, k0, K);
      commit_copies();
    }
    if (step + 1 < w.chunks) issue(step + 1, !second);
    const SmemTile<float> chunk_decay = buffers.select(decay_base, second);
    exp_chunk_decay<E, MP>(chunk_decay);
    store_state_operand<E, MP>(state_operand, state, warp);
    if (!kPrefetchQuery) {
      if (step + 1 < w.chunks) wait_copies<1>(); else wait_copies<0>();
    }
    __syncthreads();
    for (int group = 0; group < (p.sweep_local ? 0 : p.groups); ++group) {
      const int hq = h * p.groups + group;
      const SmemTile<E> q_tile = kPrefetchQuery ? buffers.select(q_base, second) : q_single;
      if (group > 0) {  // q of this query head, loaded now (this waits for the prefetch too)
        __syncthreads();  // the previous group's readers of q_tile are done
        load_token_tile<kHeadTile>(q_tile, q + hq * K, int64_t{HQ} * K, start, len, k0, K);
        commit_copies();
        wait_copies<0>();
        __syncthreads();
      }
      float ok[MP / 8][4];
      zero(ok);
      // Split state: these inter-chunk terms pair with ds terms in the gate gradient (README.md).
      warp_mma<E, MP / 8>(ok, q_tile, false, warp * 16, state_operand, false, 0, kHeadTile);
      add_slot_tile<MP>(p.slot_scores, ok, warp, start, len, HQ, hq, p.scale);
    }
    float update[MP / 8][4];
    zero(update);
    warp_mma<E, MP / 8>(update, buffers.select(k_base, second), true, warp * 16, buffers.select(write_base, second),
                        false, 0, kChunk);
#pragma unroll
    for (int j = 0; j < MP / 8; ++j) {
      const float2 decay = column_decay_pair(chunk_decay, j);
#pragma unroll
      for (int e = 0; e < 4; ++e) state[j][e] = state[j][e] * (e & 1 ? decay.y : decay.x) + update[j][e];
    }
  }
  if (p.sweep_local) {
    store_key_state<MP>(state, p.segment_states_k, (int64_t{w.index} * H + h) * state_size, k0, K, M, warp);
  } else if (p.final_state_k != nullptr && w.j == p.segments - 1) {
    store_key_state<MP>(state, p.final_state_k, (int64_t{w.n} * H + h) * state_size, k0, K, M, warp);
  }
}

// ok's inter-chunk part: the state kernel's scale (q_t^T H^k) times exp(b_t), applied here.
template <class E>
__device__ __forceinline__ float inter_slot_score(float unscaled, float b) {
  return unscaled * decay_exp<E>(b);
}

// The per-token slot passes of the intra-chunk kernels (softmax and its backward) take a row per
// 8 lanes, each lane MP / 8 consecutive slots with 16-byte loads: a warp covers 4 rows at once,
// so the global loads of a pass are 4x wider and fewer round trips than a row per warp.
constexpr int kRowLanes = 8;
constexpr int kRowsPerPass = 32 / kRowLanes;

template <int MP>
struct RowSegment {
  static constexpr int kSlots = MP / kRowLanes;  // slots per lane
  int row;   // chunk row of this lane in the pass
  int m0;    // first slot of this lane
  __device__ RowSegment(int warp, int pass) {
    const int lane = threadIdx.x & 31;
    row = warp * kSubChunk + pass * kRowsPerPass + lane / kRowLanes;
    m0 = (lane % kRowLanes) * kSlots;
  }
};

// Sum / max over the 8 lanes of a row.
__device__ __forceinline__ float row_sum(float x) {
#pragma unroll
  for (int offset = 1; offset < kRowLanes; offset *= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ __forceinline__ float row_max(float x) {
#pragma unroll
  for (int offset = 1; offset < kRowLanes; offset *= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// N consecutive fp32 values (N a multiple of 4, 16-byte aligned) from global memory.
template <int N>
__device__ __forceinline__ void load_row_floats(float (&out)[N], const float* src) {
#pragma unroll
  for (int i = 0; i < N / 4; ++i) {
    const float4 x = reinterpret_cast<const float4*>(src)[i];
    out[4 * i] = x.x; out[4 * i + 1] = x.y; out[4 * i + 2] = x.z; out[4 * i + 3] = x.w;
  }
}

// In place: scores -> softmax over the row's slots (slots >= `slots` get 0). Every lane of the
// warp takes part (the shuffles); rows past the sequence end pass any finite scores.
template <int N>
__device__ __forceinline__ void softmax_segment(float (&x)[N], int m0, int slots) {
  float largest = -INFINITY;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    if (m0 + j < slots) largest = fmaxf(largest, x[j]);
  }
  largest = row_max(largest);
  float total = 0.f;
#pragma unroll
  for (int j = 0; j < N; ++j) {
    x[j] = m0 + j < slots ? expf(x[j] - largest) : 0.f;
    total += x[j];
  }
  const float inverse = 1.f / row_sum(total);
#pragma unroll
  for (int j = 0; j < N; ++j) x[j] *= inverse;
}

// ok of one row segment: the inter-chunk part (times exp(b), see inter_slot_score), the intra-chunk
// s < t part, and the s = t term diagonal · s_t. Zeros for rows past the sequence end.
template <class E, int MP>
__device__ __forceinline__ void slot_score_segment(float (&ok)[MP / kRowLanes], const GsaParams& p,
                                                   int64_t row_offset, bool valid, float diagonal,
                                                   SmemTile<E> slot_write, SmemTile<float> gates,
                                                   const RowSegment<MP>& seg) {
  constexpr int N = MP / kRowLanes;
  if (!valid) {
#pragma unroll
    for (int j = 0; j < N; ++j) ok[j] = 0.f;
    return;
  }
  float inter[N], intra[N];
  load_row_floats<N>(inter, p.slot_scores + row_offset + seg.m0);
  load_row_floats<N>(intra, p.slot_scores_intra + row_offset + seg.m0);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const int m = seg.m0 + j;
    ok[j] = inter_slot_score<E>(inter[j], *gates.at(seg.row, m)) + intra[j] +
            diagonal * to_float(*slot_write.at(seg.row, m));
  }
}

// N consecutive values of a row: 16-byte stores when they fill whole 16-byte words.
template <class E, int N>
__device__ __forceinline__ void store_row(E* dst, const E (&x)[N]) {
  if constexpr ((N * sizeof(E)) % 16 == 0) {
#pragma unroll
    for (int i = 0; i < N * static_cast<int>(sizeof(E)) / 16; ++i) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(x)[i];
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) dst[j] = x[j];
  }
}

// Pass 2, intra-chunk: p = softmax(ok), ok completed by its s = t term (p stored in the element
// type, as pass 2 consumes it), and
// the decayed scores A_ts = Σ_m p_tm s_sm exp(b_tm − b_sm), s <= t (stored per chunk).
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) forward_values_intra_kernel(GsaParams p) {
  Chunk c;
  if (!locate_chunk(p, blockIdx.x, c)) return;
  const int h = blockIdx.y, warp = threadIdx.x / 32;
  const int H = p.heads, HQ = p.query_heads;
  extern __shared__ __align__(16) char smem[];
  SmemCarver carve{smem};
  auto probabilities = carve.tile<E>(kChunk, MP);
  auto slot_write = carve.tile<E>(kChunk, MP);
  auto gates = carve.tile<float>(kChunk, MP);
  load_token_tile<MP>(slot_write, static_cast<const E*>(p.s) + h * p.slots, int64_t{H} * p.slots,
                      c.start, c.len, 0, p.slots);
  load_gate_tile<MP>(gates, p.gate_cumsum, H, h, c.start, c.len);
  sync_tiles();
  E* p_out = static_cast<E*>(p.probabilities);
  E* scores_out = static_cast<E*>(p.value_scores);
  for (int group = 0; group < p.groups; ++group) {
    const int hq = h * p.groups + group;
    for (int pass = 0; pass < kSubChunk / kRowsPerPass; ++pass) {
      const RowSegment<MP> seg(warp, pass);
      const bool valid = seg.row < c.len;
      const int64_t token_head = (c.start + int64_t{seg.row}) * HQ + hq;
      float prob[MP / kRowLanes];
      slot_score_segment<E, MP>(prob, p, token_head * MP, valid,
                                valid ? p.key_score_diagonal[token_head] : 0.f, slot_write, gates, seg);
      softmax_segment(prob, seg.m0, p.slots);
      E rounded[MP / kRowLanes];
#pragma unroll
      for (int j = 0; j < MP / kRowLanes; ++j) rounded[j] = from_float<E>(valid ? prob[j] : 0.f);
      store_row(probabilities.at(seg.row, seg.m0), rounded);
      if (valid) store_row(p_out + token_head * MP + seg.m0, rounded);
    }
    __syncwarp();
    store_decayed_rows<E, MP, false>(probabilities, gates, c.len - 1, p.decayed_probability_blocks, c.id, HQ,
                                     hq, p.decayed_probability_parts, warp);
    float scores[8][4];
    decayed_scores<E, MP>(scores, probabilities, slot_write, gates, warp);
    E* out = scores_out + (int64_t{c.id} * HQ + hq) * kChunk * kChunk;
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      if (n / 2 == warp) continue;  // the diagonal block: store_diagonal_block_scores
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        out[(warp * 16 + acc_row(e)) * kChunk + acc_col(n, e)] = from_float<E>(scores[n][e]);
      }
    }
    store_diagonal_block_scores<E, MP>(out, probabilities, slot_write, gates, warp);
    __syncwarp();
  }
}

// Pass 2, state: for one 64-column tile of H^v [M, V], chunk by chunk:
// o_t = (p_t ⊙ exp(b_t))^T H^v + Σ_{s<=t} A_ts v_s; H^v <- Diag(exp(b_L)) H^v + (s ⊙ exp(b_L − b))^T v.
// As in the key pass, the next chunk's update operands (v, the decayed write, b_L) are loaded into
// a second buffer during the current chunk's products; o's operands (p ⊙ e^b, the scores) are
// loaded at the chunk's start, while the state operand is stored.
template <class E, int MP>
__global__ void __launch_bounds__(kThreads) forward_values_state_kernel(GsaParams p) {
  constexpr int kRowTiles = MP / 16;                 // 16-slot row tiles of the state
  constexpr int kTilesPerWarp = (kRowTiles + 3) / 4;
  const int tile = blockIdx.x, h = blockIdx.y, warp = threadIdx.x / 32;
  const int H = p.heads, HQ = p.query_heads, V = p.value_dim, M = p.slots;
  const int v0 = tile * kHeadTile;
  extern __shared__ __align__(16) char smem[];
  SmemCarver carve{smem};
  const char* const buffer_start = carve.next;  // buffer 0 of the prefetched tiles
  const SmemTile<E> v_base = carve.tile<E>(kChunk, kHeadTile);
  const SplitTile<E> write_base = carve.split_tile<E>(kChunk, MP);
  const SmemTile<float> decay_base = carve.tile<float>(1, MP);
  const DoubleBuffer buffers = carve.repeat_from(buffer_start);
  auto scores = carve.tile<E>(kChunk, kChunk);
  auto decayed_p = carve.split_tile<E>(kChunk, MP, 1);  // o needs no split operand
  auto state_operand = carve.split_tile<E>(MP, kHeadTile, 1);
  const Sweep w = locate_sweep(p, blockIdx.z);
  const int64_t state_size = int64_t{M} * V;
  const SweepStart from = sweep_start(p, w, p.initial_state_v, p.segment_states_v, h, state_size);
  auto chunk_start = [&](int step) { return w.bos + (w.first + step) * kChunk; };
  auto issue = [&](int step, bool second) {
    const int start = chunk_start(step), len = min(kChunk, w.eos - start);
    load_token_tile<kHeadTile>(buffers.select(v_base, second), static_cast<const E*>(p.v) + h * V, int64_t{H} * V,
                               start, len, v0, V);
    load_chunk_decay_async<MP>(buffers.select(decay_base, second), p.gate_cumsum, H, h, start, len);
    load_split_block<E, MP>(buffers.select(write_base, second), p.decayed_write_blocks,
                            global_chunk(p, w.n, w.first + step), H, h);
    commit_copies();
  };
  auto load_output_operands = [&](int chunk_id, int hq) {
    load_split_block<E, MP>(decayed_p, p.decayed_probability_blocks, chunk_id, HQ, hq);
    load_block<kChunk>(scores, static_cast<const E*>(p.value_scores) + (int64_t{chunk_id} * HQ + hq) * kChunk * kChunk);
    commit_copies();
  };

  // state(m, vv) for m = 16 (warp + 4 i) + acc_row, vv = acc_col.
  float state[kTilesPerWarp][8][4];
  load_value_state<MP>(state, from.states, from.base, v0, V, M, warp);
  E* o = static_cast<E*>(p.o);
  if (w.chunks > 0) issue(0, false);
  for (int step = 0; step < w.chunks; ++step) {
    const bool second = step & 1;
    const int start = chunk_start(step), len = min(kChunk, w.eos - start);
    const int chunk_id = global_chunk(p, w.n, w.first + step);
    wait_copies<0>();
    __syncthreads();  // this chunk's tiles have landed; the last chunk's readers are done
    if (!p.sweep_local) load_output_operands(chunk_id, h * p.groups);  // ahead of the prefetch (waited for below)
    if (step + 1 < w.chunks) issue(step + 1, !second);
    const SmemTile<float> chunk_decay = buffers.select(decay_base, second);
    exp_chunk_decay<E, MP>(chunk_decay);
    store_value_state_operand<E, MP>(state_operand, state, warp);
    if (step + 1 < w.chunks) wait_copies<1>(); else wait_copies<0>();
    __syncthreads();
    const SmemTile<E> v_tile = buffers.select(v_base, second);
    for (int group = 0; group < (p.sweep_local ? 0 : p.groups); ++group) {
      const int hq = h * p.groups + group;
      if (group > 0) {  // this query head's operands, loaded now (this waits for the prefetch too)
        __syncthreads();  // the previous group's readers of decayed_p and scores are done
        load_output_operands(chunk_id, hq);
        wait_copies<0>();
        __syncthreads();
      }
      float out[8][4];
      zero(out);
      warp_mma<E, 8>(out, decayed_p, false, warp * 16, state_operand.part[0], false, 0, MP);
      warp_mma<E, 8>(out, scores, false, warp * 16, v_tile, false, 0, kChunk);
      store_head_tile(o, out, warp, start, len, HQ, hq, v0, V);
    }
    const SplitTile<E> write = buffers.select(write_base, second);
#pragma unroll
    for (int i = 0; i < kTilesPerWarp; ++i) {
      if (warp + 4 * i >= kRowTiles) continue;
      float update[8][4];
      zero(update);
      warp_mma<E, 8>(update, write, true, (warp + 4 * i) * 16, v_tile, false, 0, kChunk);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int m = (warp + 4 * i) * 16 + acc_row(e);
          state[i][j][e] = state[i][j][e] * *chunk_decay.at(0, m) + update[j][e];
        }
      }
    }
  }
  if (p.sweep_local) {
    store_value_state<MP>(state, p.segment_states_v, (int64_t{w.index} * H + h) * state_size, v0, V, M, warp);
  } else if (p.final_state_v != nullptr && w.j == p.segments - 1) {
    store_value_state<MP>(state, p.final_state_v, (int64_t{w.n} * H + h) * state_size, v0, V, M, warp);
  }
}

}  // namespace lintime::cuda
