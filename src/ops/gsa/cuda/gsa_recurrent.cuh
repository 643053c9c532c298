// Token-by-token GSA (decoding: one token; short inputs: a few tokens in one launch per pass).
// Memory-bound on the fp32 states, so each CTA owns a 64-row slice of one state and keeps it in
// registers for all the tokens: the state is read once and written once per call.
//   Pass 1 (grid: key tiles x H x N): H^k <- H^k Diag(α) + k sᵀ; partial ok = q^T H^k of its slice,
//     written per key tile (no atomics: the sum over tiles is deterministic).
//   Pass 2 (grid: value tiles x H x N): ok = Σ partials, p = softmax(ok) (fp32);
//     H^v <- Diag(α) H^v + s vᵀ; o = p^T H^v for its 64 value columns.
#pragma once

#include "ops/gsa/cuda/gsa_common.cuh"

namespace lintime::cuda {

// States are stored in fp32, or in bf16 (serve --state-dtype bfloat16): then read widened to
// fp32, updated in fp32 and rounded once when stored, as the ATen path's widen / narrow around a
// call does. S is the stored type; four consecutive elements move as one access (StatePiece).
template <class S> struct StatePiece;
template <> struct StatePiece<float> { using type = float4; };
template <> struct StatePiece<__nv_bfloat16> { using type = uint2; };

__device__ __forceinline__ void unpack4(const float4& x, float (&out)[4]) {
  out[0] = x.x; out[1] = x.y; out[2] = x.z; out[3] = x.w;
}
__device__ __forceinline__ void unpack4(const uint2& x, float (&out)[4]) {
  const __nv_bfloat162 low = *reinterpret_cast<const __nv_bfloat162*>(&x.x);
  const __nv_bfloat162 high = *reinterpret_cast<const __nv_bfloat162*>(&x.y);
  out[0] = __low2float(low); out[1] = __high2float(low); out[2] = __low2float(high); out[3] = __high2float(high);
}
template <class S> __device__ __forceinline__ typename StatePiece<S>::type pack4(const float (&x)[4]);
template <> __device__ __forceinline__ float4 pack4<float>(const float (&x)[4]) {
  return make_float4(x[0], x[1], x[2], x[3]);
}
template <> __device__ __forceinline__ uint2 pack4<__nv_bfloat16>(const float (&x)[4]) {
  const __nv_bfloat162 low = __floats2bfloat162_rn(x[0], x[1]), high = __floats2bfloat162_rn(x[2], x[3]);
  return make_uint2(*reinterpret_cast<const unsigned*>(&low), *reinterpret_cast<const unsigned*>(&high));
}
// An asynchronous copy of one piece into shared memory (cp.async; zeros when !valid).
template <class S> __device__ __forceinline__ void copy_piece_async(void* dst, const void* src, bool valid) {
  if constexpr (sizeof(typename StatePiece<S>::type) == 16) {
    copy_async_16(dst, src, valid);
  } else {
    copy_async_8(dst, src, valid);
  }
}

// Four consecutive elements [col, col + 4) of one state row (row_valid false or columns past
// `cols`: zeros), as one access when rows are multiples of four elements: the decoding kernels
// are bound by these state reads and writes.
template <class S>
__device__ __forceinline__ void load_state4(float (&out)[4], const S* row, int col, int cols, bool row_valid) {
  if (row_valid && cols % 4 == 0 && col + 4 <= cols) {
    unpack4(*reinterpret_cast<const typename StatePiece<S>::type*>(row + col), out);
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) out[e] = (row_valid && col + e < cols) ? to_float(row[col + e]) : 0.f;
}

template <class S>
__device__ __forceinline__ void store_state4(S* row, int col, int cols, bool row_valid, const float (&x)[4]) {
  if (!row_valid) return;
  if (cols % 4 == 0 && col + 4 <= cols) {
    *reinterpret_cast<typename StatePiece<S>::type*>(row + col) = pack4<S>(x);
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if (col + e < cols) row[col + e] = from_float<S>(x[e]);
  }
}

// Programmatic dependent launch (sm_90): the values kernel is launched while the keys kernel
// still runs, reads its own state, and only then waits for the keys kernel's partial scores, so
// that the two passes' state traffic overlaps. No-ops before sm_90.
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_preceding_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// p = softmax over the slots of one query head's scores, one warp: x[j] holds slot lane + 32 j
// (ignored from M on); writes the MP probabilities (zeros from M on) to out.
template <int MP>
__device__ __forceinline__ void warp_softmax_slots(float (&x)[(MP + 31) / 32], int M, float* out) {
  const int lane = threadIdx.x & 31;
  float largest = -INFINITY;
#pragma unroll
  for (int j = 0; j < (MP + 31) / 32; ++j) {
    if (lane + 32 * j >= M) x[j] = -INFINITY;
    largest = fmaxf(largest, x[j]);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < (MP + 31) / 32; ++j) {
    x[j] = lane + 32 * j < M ? expf(x[j] - largest) : 0.f;
    sum += x[j];
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
#pragma unroll
  for (int j = 0; j < (MP + 31) / 32; ++j) {
    if (lane + 32 * j < MP) out[lane + 32 * j] = x[j] / sum;
  }
}

template <class E, int MP, class S>
__global__ void __launch_bounds__(kThreads, MP <= 64 ? 8 : 4) recurrent_keys_kernel(GsaParams p) {  // occupancy: memory-bound
  allow_dependent_launch();  // the values kernel waits for all of this grid before its reads
  constexpr int kQuads = MP / 4;               // float4 columns of the slice
  constexpr int kRowGroups = kThreads / kQuads;
  constexpr int kRows = kHeadTile / kRowGroups;  // rows per thread
  const int tile = blockIdx.x, h = blockIdx.y, n = blockIdx.z;
  const int H = p.heads, HQ = p.query_heads, K = p.key_dim, M = p.slots, G = p.groups;
  const int k0 = tile * kHeadTile;
  const int quad = threadIdx.x % kQuads, group_row = threadIdx.x / kQuads;
  extern __shared__ __align__(16) char smem[];
  float* key = reinterpret_cast<float*>(smem);            // [64]
  float* write = key + kHeadTile;                          // [MP]
  float* forget = write + MP;                              // [MP]
  float* query = forget + MP;                              // [G][64]
  float* partial = query + G * kHeadTile;                  // [kRowGroups][G][MP]
  int bos, eos;
  sequence_bounds(p, n, bos, eos);
  const int64_t state_base = (state_row(p, n) * H + h) * K * M;
  float state[kRows][4];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int kk = k0 + group_row + r * kRowGroups;
    const bool valid = p.initial_state_k != nullptr && kk < K;
    load_state4(state[r], valid ? reinterpret_cast<const S*>(p.initial_state_k) + state_base + int64_t{kk} * M : nullptr,
                quad * 4, M, valid);
  }
  const E* q = static_cast<const E*>(p.q);
  const E* k = static_cast<const E*>(p.k);
  const E* s = static_cast<const E*>(p.s);
  for (int64_t token = bos; token < eos; ++token) {
    __syncthreads();
    for (int i = threadIdx.x; i < kHeadTile; i += kThreads) {
      key[i] = k0 + i < K ? to_float(k[(token * H + h) * K + k0 + i]) : 0.f;
    }
    for (int i = threadIdx.x; i < MP; i += kThreads) {
      const bool valid = i < M;
      write[i] = valid ? to_float(s[(token * H + h) * M + i]) : 0.f;
      forget[i] = valid ? expf(gate_at<E>(p, (token * H + h) * M + i)) : 1.f;
    }
    for (int i = threadIdx.x; i < G * kHeadTile; i += kThreads) {
      const int g = i / kHeadTile, kk = k0 + i % kHeadTile;
      query[i] = kk < K ? to_float(q[(token * HQ + h * G + g) * K + kk]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float key_value = key[group_row + r * kRowGroups];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        state[r][e] = state[r][e] * forget[quad * 4 + e] + key_value * write[quad * 4 + e];
      }
    }
    for (int g = 0; g < G; ++g) {
      float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float query_value = query[g * kHeadTile + group_row + r * kRowGroups];
#pragma unroll
        for (int e = 0; e < 4; ++e) sum[e] += query_value * state[r][e];
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) partial[(group_row * G + g) * MP + quad * 4 + e] = sum[e];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * MP; i += kThreads) {
      float total = 0.f;
      for (int row = 0; row < kRowGroups; ++row) total += partial[row * G * MP + i];
      const int g = i / MP, m = i % MP;
      p.slot_score_partials[((int64_t{tile} * p.total_tokens + token) * HQ + h * G + g) * MP + m] =
          total * p.scale;
    }
  }
  if (p.final_state_k != nullptr) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int kk = k0 + group_row + r * kRowGroups;
      store_state4(reinterpret_cast<S*>(p.final_state_k) + state_base + int64_t{kk} * M, quad * 4, M, kk < K, state[r]);
    }
  }
}

template <class E, int MP, class S>
__global__ void __launch_bounds__(kThreads) recurrent_values_kernel(GsaParams p) {
  constexpr int kQuads = kHeadTile / 4;  // 16 float4 columns
  constexpr int kRowGroups = kThreads / kQuads;  // 8
  constexpr int kRows = MP / kRowGroups;
  const int tile = blockIdx.x, h = blockIdx.y, n = blockIdx.z;
  const int H = p.heads, HQ = p.query_heads, K = p.key_dim, V = p.value_dim, M = p.slots, G = p.groups;
  const int v0 = tile * kHeadTile;
  const int quad = threadIdx.x % kQuads, group_row = threadIdx.x / kQuads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int key_tiles = (K + kHeadTile - 1) / kHeadTile;
  extern __shared__ __align__(16) char smem[];
  float* value = reinterpret_cast<float*>(smem);  // [64]
  float* write = value + kHeadTile;                // [MP]
  float* forget = write + MP;                      // [MP]
  float* prob = forget + MP;                       // [G][MP]
  float* partial = prob + G * MP;                  // [kRowGroups][G][64]
  int bos, eos;
  sequence_bounds(p, n, bos, eos);
  const int64_t state_base = (state_row(p, n) * H + h) * M * V;
  float state[kRows][4];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int m = group_row + r * kRowGroups;
    const bool valid = p.initial_state_v != nullptr && m < M;
    load_state4(state[r], valid ? reinterpret_cast<const S*>(p.initial_state_v) + state_base + int64_t{m} * V : nullptr,
                v0 + quad * 4, V, valid);
  }
  wait_for_preceding_kernel();  // the keys kernel's partial scores (launched as its dependent)
  const E* v = static_cast<const E*>(p.v);
  const E* s = static_cast<const E*>(p.s);
  E* o = static_cast<E*>(p.o);
  for (int64_t token = bos; token < eos; ++token) {
    __syncthreads();
    for (int i = threadIdx.x; i < kHeadTile; i += kThreads) {
      value[i] = v0 + i < V ? to_float(v[(token * H + h) * V + v0 + i]) : 0.f;
    }
    for (int i = threadIdx.x; i < MP; i += kThreads) {
      const bool valid = i < M;
      write[i] = valid ? to_float(s[(token * H + h) * M + i]) : 0.f;
      forget[i] = valid ? expf(gate_at<E>(p, (token * H + h) * M + i)) : 1.f;
    }
    // Softmax of the summed partial scores, one warp per query head.
    for (int g = warp; g < G; g += kThreads / 32) {
      float score[(MP + 31) / 32];
#pragma unroll
      for (int j = 0; j < (MP + 31) / 32; ++j) {
        const int m = lane + 32 * j;
        score[j] = 0.f;
        if (m < M) {
          // Unrolled so that the tiles' loads are in flight together, not one round trip each.
#pragma unroll 8
          for (int t = 0; t < key_tiles; ++t) {
            score[j] += p.slot_score_partials[((int64_t{t} * p.total_tokens + token) * HQ + h * G + g) * MP + m];
          }
        }
      }
      warp_softmax_slots<MP>(score, M, prob + g * MP);
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int m = group_row + r * kRowGroups;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        state[r][e] = state[r][e] * forget[m] + write[m] * value[quad * 4 + e];
      }
    }
    for (int g = 0; g < G; ++g) {
      float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float weight = prob[g * MP + group_row + r * kRowGroups];
#pragma unroll
        for (int e = 0; e < 4; ++e) sum[e] += weight * state[r][e];
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) partial[(group_row * G + g) * kHeadTile + quad * 4 + e] = sum[e];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * kHeadTile; i += kThreads) {
      float total = 0.f;
      for (int row = 0; row < kRowGroups; ++row) total += partial[row * G * kHeadTile + i];
      const int g = i / kHeadTile, vv = v0 + i % kHeadTile;
      if (vv < V) o[(token * HQ + h * G + g) * V + vv] = from_float<E>(total);
    }
  }
  if (p.final_state_v != nullptr) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int m = group_row + r * kRowGroups;
      store_state4(reinterpret_cast<S*>(p.final_state_v) + state_base + int64_t{m} * V, v0 + quad * 4, V, m < M, state[r]);
    }
  }
}


// ---- One decoding step (T = 1): one CTA per (head, sequence) streams both states. ----
// The state tiles (64 key rows x MP slots, then MP slots x 64 value columns: 16 KB at MP = 64)
// flow through a ring of shared-memory stages filled by cp.async, kStepStages - 1 tiles ahead,
// so the reads of the next tiles overlap the updates and writes of this one and the key pass
// runs into the value pass without a break (the softmax between them waits only on the
// reductions). Each thread copies exactly the 16-byte pieces it later updates, so the ring needs
// no barrier. The per-slot scores and the outputs are reduced across row groups by warp shuffles
// and then shared memory.
constexpr int kStepThreads = 256;
__host__ __device__ constexpr int step_stages(int padded_slots) { return padded_slots <= 64 ? 6 : 3; }

// Shared memory of recurrent_step_kernel in floats (mirrors its carving).
__host__ __device__ constexpr int recurrent_step_floats(int padded_slots, int groups, int key_dim, int value_dim) {
  const int ring = step_stages(padded_slots) * kHeadTile * padded_slots;
  const int token = (1 + groups) * key_dim + value_dim + 2 * padded_slots;  // k, q, v, s, α
  const int warps = kStepThreads / 32;
  const int reduce = warps * groups * (padded_slots > 2 * kHeadTile ? padded_slots : 2 * kHeadTile);
  return ring + token + reduce + 2 * groups * padded_slots;  // + ok, p
}

// Sums acc[g][e] over the CTA's threads that hold the same four columns. kQuads consecutive
// threads span a row of 4 kQuads columns (kQuads a power of two up to 32), so shuffles sum first
// inside each warp, then each warp's partial goes through partials [warps][G][4 kQuads]; after a
// barrier, emit(x, total) receives entry x < G · 4 kQuads (query head x / (4 kQuads)).
template <int GMAX, int kQuads, int kCtaThreads, class Emit>
__device__ __forceinline__ void sum_over_row_groups(float (&acc)[GMAX][4], float* partials, int G, Emit emit) {
  constexpr int kWidth = 4 * kQuads, kWarps = kCtaThreads / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31, quad = threadIdx.x % kQuads;
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
#pragma unroll
      for (int offset = kQuads; offset < 32; offset *= 2) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], offset);
    }
  }
  if (lane < kQuads) {
    for (int g = 0; g < G && g < GMAX; ++g) {
#pragma unroll
      for (int e = 0; e < 4; ++e) partials[(warp * G + g) * kWidth + quad * 4 + e] = acc[g][e];
    }
  }
  __syncthreads();
  for (int x = threadIdx.x; x < G * kWidth; x += kCtaThreads) {
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += partials[w * G * kWidth + x];
    emit(x, total);
  }
}

template <class E, int MP, int GMAX, class S>
__global__ void __launch_bounds__(kStepThreads) recurrent_step_kernel(GsaParams p) {
  using Piece = typename StatePiece<S>::type;
  constexpr int kStages = step_stages(MP);
  constexpr int kPieces = kHeadTile * MP / 4 / kStepThreads;  // 4-element pieces per thread and tile
  constexpr int kKeyQuads = MP / 4, kKeyRowStride = kStepThreads / kKeyQuads;
  constexpr int kValueQuads = kHeadTile / 4, kValueRowStride = kStepThreads / kValueQuads;
  constexpr int kWarps = kStepThreads / 32;
  const int h = blockIdx.x, n = blockIdx.y, t = threadIdx.x;
  const int H = p.heads, HQ = p.query_heads, K = p.key_dim, V = p.value_dim, M = p.slots, G = p.groups;
  const int warp = t / 32, lane = t & 31;
  const int key_tiles = (K + kHeadTile - 1) / kHeadTile, value_tiles = (V + kHeadTile - 1) / kHeadTile;
  const int tiles = key_tiles + value_tiles;
  const int key_quad = t % kKeyQuads, key_row = t / kKeyQuads;          // piece j: row key_row + j * stride
  const int value_quad = t % kValueQuads, value_row = t / kValueQuads;  // piece j: slot value_row + j * stride
  const int64_t token = n;  // T = 1
  const int64_t row = state_row(p, n), base_k = (row * H + h) * K * M, base_v = (row * H + h) * M * V;
  extern __shared__ __align__(16) char smem[];
  Piece* ring = reinterpret_cast<Piece*>(smem);                         // [stages][pieces][threads]
  float* key = reinterpret_cast<float*>(ring + kStages * kPieces * kStepThreads);  // [K]
  float* query = key + K;                                               // [G][K]
  float* value = query + G * K;                                         // [V]
  float* write = value + V;                                             // [MP]
  float* forget = write + MP;                                           // [MP]
  float* reduce = forget + MP;                                          // [warps][G][max(MP, 2 x 64)]
  float* score = reduce + kWarps * G * (MP > 2 * kHeadTile ? MP : 2 * kHeadTile);  // [G][MP]
  float* prob = score + G * MP;                                         // [G][MP]

  // Where piece j of tile i lies in the states (null: outside them).
  auto piece = [&](int i, int j, int64_t& offset) -> bool {
    if (i < key_tiles) {
      const int row = i * kHeadTile + key_row + j * kKeyRowStride;
      offset = base_k + int64_t{row} * M + key_quad * 4;
      return row < K && key_quad * 4 < M;
    }
    const int m = value_row + j * kValueRowStride, col = (i - key_tiles) * kHeadTile + value_quad * 4;
    offset = base_v + int64_t{m} * V + col;
    return m < M && col < V;
  };
  auto load_tile = [&](int i) {
    if (i < tiles) {
      Piece* stage = ring + (i % kStages) * kPieces * kStepThreads;
#pragma unroll
      for (int j = 0; j < kPieces; ++j) {
        int64_t offset = 0;
        const bool inside = piece(i, j, offset);
        const S* state = reinterpret_cast<const S*>(i < key_tiles ? p.initial_state_k : p.initial_state_v);
        const bool valid = inside && state != nullptr;
        copy_piece_async<S>(stage + j * kStepThreads + t, valid ? static_cast<const void*>(state + offset) : p.q, valid);
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");  // empty groups keep the count uniform
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) load_tile(i);

  const E* q = static_cast<const E*>(p.q);
  const E* k = static_cast<const E*>(p.k);
  const E* v = static_cast<const E*>(p.v);
  const E* s = static_cast<const E*>(p.s);
  for (int i = t; i < K; i += kStepThreads) key[i] = to_float(k[(token * H + h) * K + i]);
  for (int i = t; i < G * K; i += kStepThreads) query[i] = to_float(q[(token * HQ + h * G) * K + i]);
  for (int i = t; i < V; i += kStepThreads) value[i] = to_float(v[(token * H + h) * V + i]);
  for (int i = t; i < MP; i += kStepThreads) {
    const bool valid = i < M;
    write[i] = valid ? to_float(s[(token * H + h) * M + i]) : 0.f;
    forget[i] = valid ? expf(gate_at<E>(p, (token * H + h) * M + i)) : 1.f;
  }
  __syncthreads();
  float key_write[4], key_forget[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    key_write[e] = write[key_quad * 4 + e];
    key_forget[e] = forget[key_quad * 4 + e];
  }
  float acc[GMAX][4];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[g][e] = 0.f;
  }
  E* o = static_cast<E*>(p.o);
  for (int i = 0; i < tiles; ++i) {
    load_tile(i + kStages - 1);
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kStages - 1) : "memory");
    const Piece* stage = ring + (i % kStages) * kPieces * kStepThreads;
    if (i == key_tiles) {
      // The slot scores, then their softmax (a warp per query head).
      sum_over_row_groups<GMAX, kKeyQuads, kStepThreads>(acc, reduce, G,
                                                          [&](int x, float total) { score[x] = total * p.scale; });
      __syncthreads();
      for (int g = warp; g < G; g += kWarps) {
        float x[(MP + 31) / 32];
#pragma unroll
        for (int j = 0; j < (MP + 31) / 32; ++j) x[j] = lane + 32 * j < MP ? score[g * MP + lane + 32 * j] : 0.f;
        warp_softmax_slots<MP>(x, M, prob + g * MP);
      }
      __syncthreads();
    }
    if (i < key_tiles) {
      // H^k <- H^k Diag(α) + k sᵀ on this thread's pieces; ok += q · H^k.
#pragma unroll
      for (int j = 0; j < kPieces; ++j) {
        int64_t offset = 0;
        if (!piece(i, j, offset)) continue;
        const int row = i * kHeadTile + key_row + j * kKeyRowStride;
        float x[4];
        unpack4(stage[j * kStepThreads + t], x);
        const float key_value = key[row];
#pragma unroll
        for (int e = 0; e < 4; ++e) x[e] = x[e] * key_forget[e] + key_value * key_write[e];
        if (p.final_state_k != nullptr) {
          *reinterpret_cast<Piece*>(reinterpret_cast<S*>(p.final_state_k) + offset) = pack4<S>(x);
        }
#pragma unroll
        for (int g = 0; g < GMAX; ++g) {
          if (g < G) {
            const float query_value = query[g * K + row];
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[g][e] += query_value * x[e];
          }
        }
      }
    } else {
      // H^v <- Diag(α) H^v + s vᵀ on this thread's pieces; o = pᵀ H^v for the tile's 64 columns.
      const int v0 = (i - key_tiles) * kHeadTile;
      float out[GMAX][4];
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
#pragma unroll
        for (int e = 0; e < 4; ++e) out[g][e] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < kPieces; ++j) {
        int64_t offset = 0;
        if (!piece(i, j, offset)) continue;
        const int m = value_row + j * kValueRowStride;
        float x[4];
        unpack4(stage[j * kStepThreads + t], x);
#pragma unroll
        for (int e = 0; e < 4; ++e) x[e] = x[e] * forget[m] + write[m] * value[v0 + value_quad * 4 + e];
        if (p.final_state_v != nullptr) {
          *reinterpret_cast<Piece*>(reinterpret_cast<S*>(p.final_state_v) + offset) = pack4<S>(x);
        }
#pragma unroll
        for (int g = 0; g < GMAX; ++g) {
          if (g < G) {
            const float weight = prob[g * MP + m];
#pragma unroll
            for (int e = 0; e < 4; ++e) out[g][e] += weight * x[e];
          }
        }
      }
      // The outputs of the tile's 64 columns. Two buffers by tile parity, so that the next tile's
      // writes need no barrier after this tile's reads (measured faster than one buffer and a
      // barrier, which fits three CTAs per SM: 0.200 -> 0.202 ms).
      sum_over_row_groups<GMAX, kValueQuads, kStepThreads>(
          out, reduce + (i & 1) * kWarps * G * kHeadTile, G, [&](int x, float total) {
            const int g = x / kHeadTile, col = v0 + x % kHeadTile;
            if (col < V) o[(token * HQ + h * G + g) * V + col] = from_float<E>(total);
          });
    }
  }
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

}  // namespace lintime::cuda
