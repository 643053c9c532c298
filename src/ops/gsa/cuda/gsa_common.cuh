// Device helpers shared by the chunked GSA kernels: where a chunk lies, tile loads into shared
// memory (zero outside the sequence or the head dim), and the three decayed intra-chunk
// products of the GLA core (README.md, "Intra-chunk decays"). A CTA has 4 warps; warp w owns
// the 16 tokens [16w, 16w + 16) of a chunk, which is also its sub-chunk for the decays.
#pragma once

#include "ops/gsa/cuda/gsa_cuda.h"
#include "ops/gsa/cuda/async_copy.cuh"
#include "ops/gsa/cuda/warp_mma.cuh"

namespace lintime::cuda {

constexpr int kThreads = 128;
constexpr int kSubChunk = 16;
// The backward state kernels run 8 warps: two warp groups split the state's columns, so that each
// thread holds half the accumulators (registers <= 128: two CTAs of 8 warps per SM instead of two
// CTAs of 4 warps at 255 registers).
constexpr int kStateThreads = 256;


// Barrier after tile loads: waits for this thread's asynchronous copies, then for the CTA.
__device__ __forceinline__ void sync_tiles() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
  __syncthreads();
}

// exp for decay factors: the fast approximation for 16-bit inputs (their roundings are far
// larger), the accurate one for fp32 inputs.
template <class E>
__device__ __forceinline__ float decay_exp(float x) {
  if constexpr (sizeof(E) == 2) {
    return __expf(x);
  } else {
    return expf(x);
  }
}

// The log forget gate g at a flat index, from fp32 or element-type storage.
template <class E>
__device__ __forceinline__ float gate_at(const GsaParams& p, int64_t index) {
  return p.gate_in_element_type ? to_float(static_cast<const E*>(p.g)[index])
                                : static_cast<const float*>(p.g)[index];
}

// Rows per batch of the per-slot token loops of the gate gradient: their loads are issued
// together, where a load per token would wait a round trip each (the stores in between may alias).
constexpr int kRowBatch = 16;

__device__ __forceinline__ int chunks_of(int length) { return (length + kChunk - 1) / kChunk; }

__device__ __forceinline__ void sequence_bounds(const GsaParams& p, int n, int& bos, int& eos) {
  if (p.cu_seqlens != nullptr) {
    bos = p.cu_seqlens[n];
    eos = p.cu_seqlens[n + 1];
  } else {
    bos = n * p.seqlen;
    eos = bos + p.seqlen;
  }
}

// The row of the state tensors that sequence n starts from and ends in (GsaParams::state_rows).
__device__ __forceinline__ int64_t state_row(const GsaParams& p, int n) {
  if (p.state_rows == nullptr) return n;
  const int64_t row = p.state_rows[n];
  if (row < 0 || row >= p.state_row_count) __trap();  // never read or write outside the states
  return row;
}

// Global index of chunk `local` of sequence n (chunk-indexed workspace rows).
__device__ __forceinline__ int global_chunk(const GsaParams& p, int n, int local) {
  return p.cu_seqlens != nullptr ? p.chunk_offsets[n] + local : n * chunks_of(p.seqlen) + local;
}

// One sweep of a state kernel over whole chunks: all of sequence n (segments == 1) or its
// segment j (README.md, "Segment-parallel sweeps").
struct Sweep {
  int n, j, index;     // sequence, segment, n * segments + j
  int bos, eos;        // the sequence's tokens
  int first, chunks;   // the sweep's chunks [first, first + chunks), indices local to the sequence
};

__device__ __forceinline__ Sweep locate_sweep(const GsaParams& p, int index) {
  Sweep w;
  w.index = index;
  w.n = index / p.segments;
  w.j = index % p.segments;
  sequence_bounds(p, w.n, w.bos, w.eos);
  const int total = chunks_of(w.eos - w.bos), per = (total + p.segments - 1) / p.segments;
  w.first = min(total, w.j * per);
  w.chunks = min(total, w.first + per) - w.first;
  return w;
}

// Where a sweep's state comes from: the given state (segments == 1), zero (phase A), or the
// segment's start state from the scan. `user` is the sequence's initial state (or, for the
// reverse sweeps, the final-state gradient) and may be null.
struct SweepStart {
  const float* states;
  int64_t base;
};
__device__ __forceinline__ SweepStart sweep_start(const GsaParams& p, const Sweep& w, const float* user,
                                                  const float* segment, int h, int64_t state_size) {
  if (p.segments == 1) return {user, (int64_t{w.n} * p.heads + h) * state_size};
  if (p.sweep_local) return {nullptr, 0};
  return {segment, (int64_t{w.index} * p.heads + h) * state_size};
}

struct Chunk {
  int id, seq, bos, eos, start, len;
};

// The chunk with global index id; false when id is past the last chunk.
__device__ __forceinline__ bool locate_chunk(const GsaParams& p, int id, Chunk& c) {
  int n, local;
  if (p.cu_seqlens != nullptr) {
    if (id >= p.chunk_offsets[p.num_sequences]) return false;
    int lo = 0, hi = p.num_sequences - 1;  // largest n with chunk_offsets[n] <= id
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (p.chunk_offsets[mid] <= id) lo = mid; else hi = mid - 1;
    }
    n = lo;
    local = id - p.chunk_offsets[n];
  } else {
    const int per_sequence = chunks_of(p.seqlen);
    if (id >= per_sequence * p.num_sequences) return false;
    n = id / per_sequence;
    local = id % per_sequence;
  }
  c.id = id;
  c.seq = n;
  sequence_bounds(p, n, c.bos, c.eos);
  c.start = c.bos + local * kChunk;
  c.len = min(kChunk, c.eos - c.start);
  return true;
}

// Rows [0, 64) x columns [0, WIDTH) of a token tensor into shared memory: row r is token
// start + r, column c is src column col0 + c; zero where r >= rows or col0 + c >= dim.
// src points at the head's first element; tokens are token_stride elements apart.
template <int WIDTH, class T, int kCtaThreads = kThreads>
__device__ __forceinline__ void load_token_tile(SmemTile<T> dst, const T* src, int64_t token_stride,
                                                int start, int rows, int col0, int dim) {
  constexpr int kVec = 16 / sizeof(T);
  constexpr int kVecs = WIDTH / kVec;
  const bool vectorized = token_stride % kVec == 0 && dim % kVec == 0;
  for (int i = threadIdx.x; i < kChunk * kVecs; i += kCtaThreads) {
    const int r = i / kVecs, c = (i % kVecs) * kVec;
    const int col = col0 + c;
    T* out = dst.at(r, c);
    const T* in = src + (start + static_cast<int64_t>(r)) * token_stride + col;
    if (vectorized && col + kVec <= dim) {
      copy_async_16(out, r < rows ? in : src, r < rows);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        out[e] = (r < rows && col + e < dim) ? in[e] : T(0.f);
      }
    }
  }
}

// exp(b_L) of a chunk (its last row of cumulative gates), the state's decay over the chunk, into
// a [1, MP] tile. The state kernels need only this row of b: the products with the state leave
// the per-token decays to the kernels that read them (README.md, "Forward"), which keeps the
// state kernels' shared memory small enough for two CTAs per SM.
template <class E, int MP, int kCtaThreads = kThreads>
__device__ __forceinline__ void load_chunk_decay(SmemTile<float> dst, const float* gate_cumsum, int heads,
                                                 int h, int start, int len) {
  for (int m = threadIdx.x; m < MP; m += kCtaThreads) {
    *dst.at(0, m) = decay_exp<E>(gate_cumsum[((start + int64_t{len} - 1) * heads + h) * MP + m]);
  }
}

// The same row b_L, copied asynchronously (cp.async) so that it can be in flight with a chunk's
// other tiles; exp_chunk_decay turns it into exp(b_L) in place after the wait and before a barrier.
template <int MP, int kCtaThreads = kThreads>
__device__ __forceinline__ void load_chunk_decay_async(SmemTile<float> dst, const float* gate_cumsum, int heads,
                                                       int h, int start, int len) {
  const float* row = gate_cumsum + ((start + int64_t{len} - 1) * heads + h) * MP;
  for (int i = threadIdx.x; i < MP / 4; i += kCtaThreads) copy_async_16(dst.at(0, 4 * i), row + 4 * i, true);
}
template <class E, int MP, int kCtaThreads = kThreads>
__device__ __forceinline__ void exp_chunk_decay(SmemTile<float> decay) {
  for (int m = threadIdx.x; m < MP; m += kCtaThreads) *decay.at(0, m) = decay_exp<E>(*decay.at(0, m));
}

// A contiguous [64, WIDTH] block (a chunk's stored scores or prepared operand) into a tile.
template <int WIDTH, class T, int kCtaThreads = kThreads>
__device__ __forceinline__ void load_block(SmemTile<T> dst, const T* src) {
  constexpr int kVec = 16 / sizeof(T);
  for (int i = threadIdx.x; i < kChunk * WIDTH / kVec; i += kCtaThreads) {
    const int r = i / (WIDTH / kVec), c = (i % (WIDTH / kVec)) * kVec;
    copy_async_16(dst.at(r, c), src + r * WIDTH + c, true);
  }
}

// The cumulative gates b of a chunk [64, MP] (fp32). Rows past the sequence end repeat the
// last valid row: padding tokens have g = 0, so the decays stay those of the last token.
template <int MP>
__device__ __forceinline__ void load_gate_tile(SmemTile<float> dst, const float* gate_cumsum,
                                               int heads, int h, int start, int len) {
  constexpr int kVecs = MP / 4;
  for (int i = threadIdx.x; i < kChunk * kVecs; i += kThreads) {
    const int r = i / kVecs, c = (i % kVecs) * 4;
    const int row = min(r, len - 1);
    copy_async_16(dst.at(r, c), gate_cumsum + ((start + static_cast<int64_t>(row)) * heads + h) * MP + c, true);
  }
}

// The three intra-chunk products with the decay exp(b_t − b_s) on the slot dimension m
// (b non-increasing in t). Sub-chunk i = rows [16i, 16i + 16) belongs to warp i. Blocks off the
// diagonal factor the decay through a reference row of b so that both factors are <= 1; the
// diagonal 16 x 16 blocks take exp(b_t − b_s) pair by pair, which is exact for any gate.
// kPairs says which pairs of the diagonal blocks to take: the s = t terms are left out where the
// gate-gradient terms are sums in which those cancel exactly (README.md, "Gate gradient"), and
// the whole diagonal block where diagonal_block_pairs forms its pairs for several products at once.
enum class Pairs { all, without_self, off_block };

// The products of the warp's rows t with the earlier 16-token blocks through the reference row
// r = b at the sub-chunk's first row: off_tm = Σ_{s < r0} W_ts y_sm exp(r_m − b_sm) (both factors
// of the decay <= 1), for decayed_apply and add_pair_gate_terms. warp > 0 only.
template <class E, int MP>
__device__ __forceinline__ void earlier_block_products(float (&off)[MP / 8][4], SmemTile<E> w, SmemTile<E> y,
                                                       SmemTile<float> b, int warp) {
  const int r0 = warp * kSubChunk;
  const float* reference = b.at(r0, 0);
  zero(off);
  warp_mma_generated<E, MP / 8>(
      off, [&](int row, int k) { return to_float(*w.at(row, k)); }, r0,
      [&](int k, int col) { return to_float(*y.at(k, col)) * decay_exp<E>(reference[col] - *b.at(k, col)); },
      0, r0);
}

// decayed_apply: z_tm += Σ_{s<=t} W_ts y_sm exp(b_tm − b_sm) for the warp's rows t.
// W [64, 64] (t, s), y [64, MP]; acc [16, MP].
template <class E, int MP, Pairs kPairs = Pairs::all>
__device__ __forceinline__ void decayed_apply(float (&acc)[MP / 8][4], SmemTile<E> w,
                                              SmemTile<E> y, SmemTile<float> b, int warp) {
  const int r0 = warp * kSubChunk;
  const float* reference = b.at(r0, 0);  // b of the sub-chunk's first row
  if (warp > 0) {
    float off[MP / 8][4];
    earlier_block_products<E, MP>(off, w, y, b, warp);
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = r0 + acc_row(e), m = acc_col(n, e);
        acc[n][e] += off[n][e] * decay_exp<E>(*b.at(t, m) - reference[m]);
      }
    }
  }
  if constexpr (kPairs != Pairs::off_block) {  // the diagonal block's pairs, one by one
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = r0 + acc_row(e), m = acc_col(n, e);
        const float bt = *b.at(t, m);
        float sum = 0.f;
        for (int s = r0; s < (kPairs == Pairs::all ? t + 1 : t); ++s) {
          sum += to_float(*w.at(t, s)) * to_float(*y.at(s, m)) * decay_exp<E>(bt - *b.at(s, m));
        }
        acc[n][e] += sum;
      }
    }
  }
}

// decayed_scores: X_ts = Σ_m x_tm y_sm exp(b_tm − b_sm) for the warp's rows t and the columns s
// of the earlier 16-token blocks (tensor cores); the diagonal block is left at zero for
// store_diagonal_block_scores. x, y [64, MP]; acc [16, 64] (overwritten).
template <class E, int MP>
__device__ __forceinline__ void decayed_scores(float (&acc)[8][4], SmemTile<E> x, SmemTile<E> y,
                                               SmemTile<float> b, int warp) {
  const int r0 = warp * kSubChunk;
  const float* reference = b.at(r0, 0);
  zero(acc);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    if (j >= warp) continue;
    float block[2][4];
    zero(block);
    warp_mma_generated<E, 2>(
        block,
        [&](int row, int m) {
          return to_float(*x.at(row, m)) * decay_exp<E>(*b.at(row, m) - reference[m]);
        },
        r0,
        [&](int m, int col) {
          return to_float(*y.at(col, m)) * decay_exp<E>(reference[m] - *b.at(col, m));
        },
        j * kSubChunk, MP);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      acc[2 * j][e] = block[0][e];
      acc[2 * j + 1][e] = block[1][e];
    }
  }
}

// Four consecutive shared-memory elements as floats (8- or 16-byte aligned).
template <class E>
__device__ __forceinline__ void load4(float (&out)[4], const E* src) {
  if constexpr (sizeof(E) == 2) {
    const uint2 raw = *reinterpret_cast<const uint2*>(src);
    const E* values = reinterpret_cast<const E*>(&raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j] = to_float(values[j]);
  } else {
    const float4 v = *reinterpret_cast<const float4*>(src);
    out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
  }
}

// The warp's diagonal 16 x 16 block of decayed_scores, exact pair by pair (any gate), stored
// straight into the chunk's [64, 64] score block `out` (row-major, element type; zero above the
// diagonal). The 136 entries s <= t are spread over the lanes (a lane per entry, four slots per
// step with vector shared-memory loads), rather than the accumulator layout's 8 entries per lane
// of which half are above the diagonal.
template <class E, int MP>
__device__ __forceinline__ void store_diagonal_block_scores(E* out, SmemTile<E> x, SmemTile<E> y,
                                                            SmemTile<float> b, int warp) {
  const int r0 = warp * kSubChunk, lane = threadIdx.x & 31;
  constexpr int kLower = kSubChunk * (kSubChunk + 1) / 2;
  for (int k = lane; k < kLower; k += 32) {
    int t = static_cast<int>((sqrtf(8.f * k + 1.f) - 1.f) * 0.5f);  // row of entry k
    while ((t + 1) * (t + 2) / 2 <= k) ++t;
    while (t * (t + 1) / 2 > k) --t;
    const int s = k - t * (t + 1) / 2;
    float sum = 0.f;
    for (int m = 0; m < MP; m += 4) {
      float xt[4], ys[4], bt[4], bs[4];
      load4(xt, x.at(r0 + t, m));
      load4(ys, y.at(r0 + s, m));
      load4(bt, b.at(r0 + t, m));
      load4(bs, b.at(r0 + s, m));
#pragma unroll
      for (int j = 0; j < 4; ++j) sum += xt[j] * ys[j] * decay_exp<E>(bt[j] - bs[j]);
    }
    out[(r0 + t) * kChunk + r0 + s] = from_float<E>(sum);
  }
  for (int k = lane; k < kSubChunk * kSubChunk; k += 32) {
    const int t = k / kSubChunk, s = k % kSubChunk;
    if (s > t) out[(r0 + t) * kChunk + r0 + s] = from_float<E>(0.f);
  }
}

// decayed_apply_reverse: z_sm += Σ_{t>=s} W_ts y_tm exp(b_tm − b_sm) for the warp's rows s.
// W [64, 64] (t, s), y [64, MP]; acc [16, MP].
template <class E, int MP, Pairs kPairs = Pairs::all>
__device__ __forceinline__ void decayed_apply_reverse(float (&acc)[MP / 8][4], SmemTile<E> w,
                                                      SmemTile<E> y, SmemTile<float> b, int warp) {
  const int r0 = warp * kSubChunk, r_end = r0 + kSubChunk;
  const float* reference = b.at(r_end - 1, 0);  // b of the sub-chunk's last row
  if (warp < 3) {
    float off[MP / 8][4];
    zero(off);
    warp_mma_generated<E, MP / 8>(
        off, [&](int row, int k) { return to_float(*w.at(r_end + k, row)); }, r0,
        [&](int k, int col) {
          return to_float(*y.at(r_end + k, col)) *
                 decay_exp<E>(*b.at(r_end + k, col) - reference[col]);
        },
        0, kChunk - r_end);
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int s = r0 + acc_row(e), m = acc_col(n, e);
        acc[n][e] += off[n][e] * decay_exp<E>(reference[m] - *b.at(s, m));
      }
    }
  }
  if constexpr (kPairs != Pairs::off_block) {  // the diagonal block's pairs, one by one
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int s = r0 + acc_row(e), m = acc_col(n, e);
        const float bs = *b.at(s, m);
        float sum = 0.f;
        for (int t = kPairs == Pairs::all ? s : s + 1; t < r_end; ++t) {
          sum += to_float(*w.at(t, s)) * to_float(*y.at(t, m)) * decay_exp<E>(*b.at(t, m) - bs);
        }
        acc[n][e] += sum;
      }
    }
  }
}

// An fp32 operand held as the sum of three E parts (hi + mid + lo: 24 significant bits for bf16)
// so that products with it keep fp32 accuracy on 16-bit tensor cores (three products instead of
// one); a single part for fp32. Used for the decayed operands of the state recurrences, whose
// errors would otherwise accumulate over the chunks of a sequence.
// `parts` < kParts uses fewer (one: a plain rounded operand) where the precision is not needed.
template <class E>
struct SplitTile {
  static constexpr int kParts = sizeof(E) == 2 ? 3 : 1;
  SmemTile<E> part[kParts];
  int parts = kParts;
  __device__ __forceinline__ void store(int row, int col, float x) const {
#pragma unroll
    for (int i = 0; i < kParts; ++i) {
      if (i >= parts) break;
      const E rounded = from_float<E>(x);
      *part[i].at(row, col) = rounded;
      x -= to_float(rounded);
    }
  }
  // Two adjacent columns (col even) with one store per part.
  __device__ __forceinline__ void store2(int row, int col, float x0, float x1) const {
#pragma unroll
    for (int i = 0; i < kParts; ++i) {
      if (i >= parts) break;
      const E r0 = from_float<E>(x0), r1 = from_float<E>(x1);
      if constexpr (sizeof(E) == 2) {
        *reinterpret_cast<uint32_t*>(part[i].at(row, col)) =
            static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&r0)) |
            (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&r1)) << 16);
      } else {
        *reinterpret_cast<float2*>(part[i].at(row, col)) = make_float2(r0, r1);
      }
      x0 -= to_float(r0);
      x1 -= to_float(r1);
    }
  }
  // Eight adjacent columns (col a multiple of 8) with 16-byte stores.
  __device__ __forceinline__ void store8(int row, int col, float (&x)[8]) const {
#pragma unroll
    for (int i = 0; i < kParts; ++i) {
      if (i >= parts) break;
      E rounded[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        rounded[j] = from_float<E>(x[j]);
        x[j] -= to_float(rounded[j]);
      }
#pragma unroll
      for (int v = 0; v < 8 * static_cast<int>(sizeof(E)) / 16; ++v) {
        reinterpret_cast<uint4*>(part[i].at(row, col))[v] = reinterpret_cast<const uint4*>(rounded)[v];
      }
    }
  }
};

// Slots [m0, m0 + 8) of token row `start + t` of a slot tensor (elements token_stride apart per
// token) as floats, zero past the sequence end or the slot count; 16-byte loads when aligned.
template <class E>
__device__ __forceinline__ void load_slots8(float (&out)[8], const E* src, int64_t token_stride,
                                            int start, int t, int len, int m0, int slots) {
  constexpr int kVec = 16 / sizeof(E);
  const E* row = src + (start + int64_t{t}) * token_stride + m0;
  // Aligned when every row and head offset is a multiple of 16 bytes.
  if (t < len && m0 + 8 <= slots && token_stride % kVec == 0 && slots % kVec == 0) {
    E values[8];
#pragma unroll
    for (int v = 0; v < 8 / kVec; ++v) {
      reinterpret_cast<uint4*>(values)[v] = reinterpret_cast<const uint4*>(row)[v];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = to_float(values[j]);
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = (t < len && m0 + j < slots) ? to_float(row[j]) : 0.f;
  }
}

// Eight consecutive floats of a shared-memory row (col a multiple of 4).
__device__ __forceinline__ void load_floats8(float (&out)[8], const float* p) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
  out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
}

// acc += A · B with A split (a_transposed as in warp_mma).
template <class E, int NT>
__device__ __forceinline__ void warp_mma(float (&acc)[NT][4], const SplitTile<E>& a, bool a_transposed,
                                         int r0, SmemTile<E> b, bool b_transposed, int n0, int kdim) {
#pragma unroll
  for (int i = SplitTile<E>::kParts - 1; i >= 0; --i) {  // constant indices: the parts stay in registers
    if (i < a.parts) warp_mma<E, NT>(acc, a.part[i], a_transposed, r0, b, b_transposed, n0, kdim);
  }
}
// acc += A · B with B split.
template <class E, int NT>
__device__ __forceinline__ void warp_mma(float (&acc)[NT][4], SmemTile<E> a, bool a_transposed, int r0,
                                         const SplitTile<E>& b, bool b_transposed, int n0, int kdim) {
#pragma unroll
  for (int i = SplitTile<E>::kParts - 1; i >= 0; --i) {
    if (i < b.parts) warp_mma<E, NT>(acc, a, a_transposed, r0, b.part[i], b_transposed, n0, kdim);
  }
}

// The intra-chunk gate terms of one pass (README.md, "Gate gradient") for the warp's rows a:
// out(a, m) += Σ_{s<a} F_as − Σ_{t>a} F_ta with F_ts = x_tm W_ts y_sm exp(b_tm − b_sm).
// In the gate gradient's sums the pairs that do not straddle a token cancel, so both sums must
// be built from the same product for every pair: two products with differently rounded
// operands would leave bf16 rounding, which grows with the sequence. Pairs in different 16-token
// blocks (i > j) use, on both sides, x̂_t = round(x_t e^{b_t − r_i}) and ŷ_s = round(y_s e^{r_i − b_s})
// with r_i = b at block i's first row (both factors <= 1) and tensor-core sums of W_ts times one
// of them; the pairs inside a diagonal block are diagonal_block_pairs'. Rows past the sequence
// end have x = y = 0.
template <class E, int MP>
__device__ __forceinline__ void add_pair_gate_terms(SmemTile<float> out, SmemTile<E> w, SmemTile<E> x,
                                                    SmemTile<E> y, SmemTile<float> b, int warp) {
  const int r0 = warp * kSubChunk;
  auto rounded = [](float v) { return to_float(from_float<E>(v)); };
  float terms[MP / 8][4];
  zero(terms);
  if (warp > 0) {  // this block's rows a as t, the earlier blocks as s
    const float* reference = b.at(r0, 0);
    float sums[MP / 8][4];
    earlier_block_products<E, MP>(sums, w, y, b, warp);
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int t = r0 + acc_row(e), m = acc_col(n, e);
        terms[n][e] += rounded(to_float(*x.at(t, m)) * decay_exp<E>(*b.at(t, m) - reference[m])) * sums[n][e];
      }
    }
  }
  for (int i = warp + 1; i < kChunk / kSubChunk; ++i) {  // this block's rows a as s, block i as t
    const int t0 = i * kSubChunk;
    const float* reference = b.at(t0, 0);
    float sums[MP / 8][4];
    zero(sums);
    warp_mma_generated<E, MP / 8>(
        sums, [&](int row, int k) { return to_float(*w.at(t0 + k, row)); }, r0,
        [&](int k, int col) {
          return to_float(*x.at(t0 + k, col)) * decay_exp<E>(*b.at(t0 + k, col) - reference[col]);
        },
        0, kSubChunk);
#pragma unroll
    for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int s = r0 + acc_row(e), m = acc_col(n, e);
        terms[n][e] -= rounded(to_float(*y.at(s, m)) * decay_exp<E>(reference[m] - *b.at(s, m))) * sums[n][e];
      }
    }
  }
#pragma unroll
  for (int n = 0; n < MP / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) *out.at(r0 + acc_row(e), acc_col(n, e)) += terms[n][e];
  }
}

// The pairs s < t inside the warp's diagonal 16-token block, one by one (exact for any gate), for
// three products at once: each decay e_ts = exp(b_tm − b_sm) and weight W_ts e_ts is formed once.
//   forward(t, m) += f_t = Σ_s W_ts e_ts y_sm         (decayed_apply's block part; skipped if null)
//   reverse(s, m) += r_s = Σ_t W_ts e_ts x_tm         (decayed_apply_reverse's block part)
//   gate(a, m)    += x_am f_a − y_am r_a              (add_pair_gate_terms's block part)
// The gate terms of a pair, x_t W_ts e_ts y_s, enter f_t and r_s with the same fp32 factors on
// both sides, so they cancel in the gate gradient's sums to fp32 rounding. Lanes own slot columns
// (conflict-free shared-memory rows); only the warp's own rows are read and written.
// kReverse = false: the forward sums only (x, reverse and gate unused).
template <class E, int MP, bool kReverse = true>
__device__ __forceinline__ void diagonal_block_pairs(SmemTile<E> w, SmemTile<E> x, SmemTile<E> y,
                                                     SmemTile<float> b, int warp, SmemTile<float> forward,
                                                     SmemTile<float> reverse, SmemTile<float> gate) {
  const int r0 = warp * kSubChunk, lane = threadIdx.x & 31;
  __syncwarp();  // the caller's writes to these rows (other lanes) are visible
  for (int m = lane; m < MP; m += 32) {
    float bb[kSubChunk], xx[kSubChunk], yy[kSubChunk], rev[kSubChunk];
#pragma unroll
    for (int i = 0; i < kSubChunk; ++i) {
      bb[i] = *b.at(r0 + i, m);
      xx[i] = kReverse ? to_float(*x.at(r0 + i, m)) : 0.f;
      yy[i] = to_float(*y.at(r0 + i, m));
      rev[i] = 0.f;
    }
#pragma unroll
    for (int t = 1; t < kSubChunk; ++t) {
      float fwd = 0.f;
#pragma unroll
      for (int s = 0; s < t; ++s) {
        const float weight = to_float(*w.at(r0 + t, r0 + s)) * decay_exp<E>(bb[t] - bb[s]);
        fwd += weight * yy[s];
        if constexpr (kReverse) rev[s] += weight * xx[t];
      }
      if (forward.data != nullptr) *forward.at(r0 + t, m) += fwd;
      if constexpr (kReverse) *gate.at(r0 + t, m) += xx[t] * fwd;
    }
    if constexpr (kReverse) {
#pragma unroll
      for (int s = 0; s < kSubChunk - 1; ++s) {
        *reverse.at(r0 + s, m) += rev[s];
        *gate.at(r0 + s, m) -= yy[s] * rev[s];
      }
    }
  }
  __syncwarp();
}

// The warp's 16 rows of an fp32 [64, MP] tile to global rows [tok, heads_x, MP] of head hx
// (rows inside the sequence only), with 16-byte stores.
template <int MP>
__device__ __forceinline__ void store_warp_rows(float* dst, int heads_x, int hx, SmemTile<float> tile,
                                                int warp, const Chunk& c) {
  const int lane = threadIdx.x & 31;
  for (int i = lane; i < kSubChunk * MP / 4; i += 32) {
    const int r = warp * kSubChunk + i / (MP / 4), m = (i % (MP / 4)) * 4;
    if (r < c.len) {
      *reinterpret_cast<float4*>(dst + ((c.start + int64_t{r}) * heads_x + hx) * MP + m) =
          *reinterpret_cast<const float4*>(tile.at(r, m));
    }
  }
}

// The decayed slot operands of the state kernels, written by the intra-chunk kernels that hold
// their tiles: for the warp's 16 rows t of x (a [64, MP] shared tile, zero past the sequence end
// and in padding slots), x_t ⊙ exp(b_L − b_t) (kToEnd: the state update's write) or x_t ⊙ exp(b_t)
// (the query side of the products with the state at the chunk start), as `parts` split parts
// into the chunk-blocked [chunks, heads_x, SplitTile::kParts, 64, MP] tensor at (chunk, hx). Every
// head-dim tile of the state kernels loads them; preparing them there cost each tile the same
// exps, splits and synchronous loads. b: the chunk's gate tile (rows past the end repeat the
// last row, `last`).
template <class E, int MP, bool kToEnd>
__device__ __forceinline__ void store_decayed_rows(SmemTile<E> x, SmemTile<float> b, int last, void* blocks,
                                                   int64_t chunk, int heads_x, int hx, int parts, int warp) {
  constexpr int kParts = SplitTile<E>::kParts;
  SplitTile<E> out;
  E* base = static_cast<E*>(blocks) + (chunk * heads_x + hx) * kParts * kChunk * MP;
#pragma unroll
  for (int i = 0; i < kParts; ++i) out.part[i] = SmemTile<E>{base + i * kChunk * MP, MP};
  out.parts = parts;
  const int lane = threadIdx.x & 31;
  for (int i = lane; i < kSubChunk * MP / 8; i += 32) {
    const int t = warp * kSubChunk + i / (MP / 8), m0 = (i % (MP / 8)) * 8;
    float value[8], b_t[8], b_last[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) value[j] = to_float(*x.at(t, m0 + j));
    load_floats8(b_t, b.at(t, m0));
    if constexpr (kToEnd) load_floats8(b_last, b.at(last, m0));
#pragma unroll
    for (int j = 0; j < 8; ++j) value[j] *= decay_exp<E>(kToEnd ? b_last[j] - b_t[j] : b_t[j]);
    out.store8(t, m0, value);
  }
}

// The warp's accumulator tile [16 tokens, 8 NT columns] (rows 16 warp.., the token rows of the
// chunk) rounded into rows of a token tensor [tok, heads_x, dim] at head hx, columns
// col0 + (0..8 NT): tokens inside the chunk and columns inside the head only. `scale` multiplies first.
template <class E, int NT>
__device__ __forceinline__ void store_head_tile(E* dst, const float (&acc)[NT][4], int warp, int start, int len,
                                                int heads_x, int hx, int col0, int dim, float scale = 1.f) {
  // Elements e = 0, 1 (and 2, 3) of a tile are adjacent columns of one row: one paired store
  // each where the row start and column are even (fewer store instructions per chunk step).
  const bool paired = dim % 2 == 0 && col0 % 2 == 0 && reinterpret_cast<uintptr_t>(dst) % (2 * sizeof(E)) == 0;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int t = warp * 16 + acc_row(2 * half), col = col0 + acc_col(j, 0);
      if (t >= len || col >= dim) continue;
      E* out = dst + ((start + int64_t{t}) * heads_x + hx) * dim + col;
      const E first = from_float<E>(acc[j][2 * half] * scale);
      if (col + 1 >= dim) {
        *out = first;
        continue;
      }
      const E second = from_float<E>(acc[j][2 * half + 1] * scale);
      if (!paired) {
        out[0] = first;
        out[1] = second;
      } else if constexpr (sizeof(E) == 2) {
        *reinterpret_cast<uint32_t*>(out) = static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&first)) |
                                           (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&second)) << 16);
      } else {
        *reinterpret_cast<float2*>(out) = make_float2(to_float(first), to_float(second));
      }
    }
  }
}

// The decays of the two adjacent state columns acc_col(j, 0), acc_col(j, 0) + 1 of a thread's
// accumulators, from a [1, MP] fp32 tile: one 8-byte shared-memory load.
__device__ __forceinline__ float2 column_decay_pair(const SmemTile<float>& decay, int j) {
  return *reinterpret_cast<const float2*>(decay.at(0, acc_col(j, 0)));
}

// Adds (x, y) to dst[0], dst[1] in global memory (one vector reduction where the GPU has it).
__device__ __forceinline__ void atomic_add_pair(float* dst, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(dst), make_float2(x, y));
#else
  atomicAdd(dst, x);
  atomicAdd(dst + 1, y);
#endif
}

// The warp's accumulator tile [16 tokens, 8 NT slots from m0] (times scale) added atomically into
// rows of an fp32 slot tensor [tok, heads_x, MP] at head hx: partial sums over head-dim tiles.
template <int MP, int NT>
__device__ __forceinline__ void add_slot_columns(float* dst, const float (&acc)[NT][4], int m0, int warp,
                                                 int start, int len, int heads_x, int hx, float scale = 1.f) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int t = warp * 16 + acc_row(e), m = m0 + acc_col(j, e);
      if (t < len) {
        atomic_add_pair(dst + ((start + int64_t{t}) * heads_x + hx) * MP + m, acc[j][e] * scale,
                        acc[j][e + 1] * scale);
      }
    }
  }
}

// add_slot_columns over all MP slots.
template <int MP>
__device__ __forceinline__ void add_slot_tile(float* dst, const float (&acc)[MP / 8][4], int warp, int start,
                                              int len, int heads_x, int hx, float scale = 1.f) {
  add_slot_columns<MP>(dst, acc, 0, warp, start, len, heads_x, hx, scale);
}

// Two buffers of the same tiles in shared memory (kernels that load a chunk's tiles while the
// previous chunk's products run): the tiles carved from `start` on form buffer 0 and buffer 1
// repeats them right after (SmemCarver::repeat_from). Selecting a buffer is address arithmetic:
// choosing between two tile objects would put them in local memory.
struct DoubleBuffer {
  int64_t bytes = 0;  // one buffer's size
  template <class T>
  __device__ SmemTile<T> select(SmemTile<T> t, bool second) const {
    t.data = reinterpret_cast<T*>(reinterpret_cast<char*>(t.data) + (second ? bytes : 0));
    return t;
  }
  template <class T>
  __device__ SplitTile<T> select(SplitTile<T> t, bool second) const {
#pragma unroll
    for (int i = 0; i < SplitTile<T>::kParts; ++i) t.part[i] = select(t.part[i], second);
    return t;
  }
};

// Shared-memory carving: consecutive tiles, each 16-byte aligned.
struct SmemCarver {
  char* next;
  template <class T>
  __device__ SmemTile<T> tile(int rows, int cols) {
    const int ld = cols + kPad<T>;
    SmemTile<T> t{reinterpret_cast<T*>(next), ld};
    next += (static_cast<size_t>(rows) * ld * sizeof(T) + 15) / 16 * 16;
    return t;
  }
  template <class T>
  __device__ SplitTile<T> split_tile(int rows, int cols, int parts = SplitTile<T>::kParts) {
    SplitTile<T> t;
#pragma unroll
    for (int i = 0; i < SplitTile<T>::kParts; ++i) {
      t.part[i] = i < parts ? tile<T>(rows, cols) : SmemTile<T>{nullptr, 0};
    }
    t.parts = parts;
    return t;
  }
  // Reserves a second copy of everything carved since `start` (see DoubleBuffer).
  __device__ DoubleBuffer repeat_from(const char* start) {
    DoubleBuffer buffers{next - start};
    next += buffers.bytes;
    return buffers;
  }
  // A split tile using `parts` parts but taking the room of all of them: the tiles carved after it
  // stay at offsets known at compile time (fewer registers for their addresses).
  template <class T>
  __device__ SplitTile<T> split_tile_reserved(int rows, int cols, int parts) {
    SplitTile<T> t = split_tile<T>(rows, cols);
    t.parts = parts;
    return t;
  }
};

template <class T>
constexpr size_t smem_tile_bytes(int rows, int cols) {
  return (static_cast<size_t>(rows) * (cols + kPad<T>) * sizeof(T) + 15) / 16 * 16;
}

}  // namespace lintime::cuda
