// Token-by-token GSA (decoding: one token; short inputs: a few tokens in one launch).
// Memory-bound on the fp32 states, so each CTA owns 64-row slices of the states and keeps them in
// registers for all the tokens: the states are read once and written once per call.
//   Pass 1 (per key tile): H^k <- H^k Diag(α) + k sᵀ; partial ok = q^T H^k of its slice.
//   Pass 2 (per value tile): ok = Σ partials over the key tiles in a fixed order (deterministic),
//     p = softmax(ok) (fp32); H^v <- Diag(α) H^v + s vᵀ; o = p^T H^v for its 64 value columns.
// On sm_90 one kernel does both: a cluster per (sequence, head), CTA c holding key tile c and
// value tile c, the partial scores exchanged through distributed shared memory
// (recurrent_cluster_kernel: each key tile's CTA pushes its scores to all). Elsewhere, or beyond 8 tiles, two kernels, the partials going
// through global memory (recurrent_keys_kernel, then recurrent_values_kernel).
#pragma once

#include "ops/gsa/cuda/gsa_common.cuh"

#include <cooperative_groups.h>

namespace lintime::cuda {

// Four consecutive floats [col, col + 4) of one state row (row_valid false or columns past
// `cols`: zeros), as one 16-byte access when rows are 16-byte multiples: the decoding kernels are
// bound by these state reads and writes.
__device__ __forceinline__ void load_state4(float (&out)[4], const float* row, int col, int cols,
                                            bool row_valid) {
  if (row_valid && cols % 4 == 0 && col + 4 <= cols) {
    const float4 x = *reinterpret_cast<const float4*>(row + col);
    out[0] = x.x; out[1] = x.y; out[2] = x.z; out[3] = x.w;
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) out[e] = (row_valid && col + e < cols) ? row[col + e] : 0.f;
}

__device__ __forceinline__ void store_state4(float* row, int col, int cols, bool row_valid,
                                             const float (&x)[4]) {
  if (!row_valid) return;
  if (cols % 4 == 0 && col + 4 <= cols) {
    *reinterpret_cast<float4*>(row + col) = make_float4(x[0], x[1], x[2], x[3]);
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    if (col + e < cols) row[col + e] = x[e];
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

template <class E, int MP>
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
  const int64_t state_base = (int64_t{n} * H + h) * K * M;
  float state[kRows][4];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int kk = k0 + group_row + r * kRowGroups;
    const bool valid = p.initial_state_k != nullptr && kk < K;
    load_state4(state[r], valid ? p.initial_state_k + state_base + int64_t{kk} * M : nullptr, quad * 4, M, valid);
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
      store_state4(p.final_state_k + state_base + int64_t{kk} * M, quad * 4, M, kk < K, state[r]);
    }
  }
}

template <class E, int MP>
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
  const int64_t state_base = (int64_t{n} * H + h) * M * V;
  float state[kRows][4];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int m = group_row + r * kRowGroups;
    const bool valid = p.initial_state_v != nullptr && m < M;
    load_state4(state[r], valid ? p.initial_state_v + state_base + int64_t{m} * V : nullptr, v0 + quad * 4, V, valid);
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
      float largest = -INFINITY;
#pragma unroll
      for (int j = 0; j < (MP + 31) / 32; ++j) {
        const int m = lane + 32 * j;
        float total = -INFINITY;
        if (m < M) {
          total = 0.f;
          for (int t = 0; t < key_tiles; ++t) {
            total += p.slot_score_partials[((int64_t{t} * p.total_tokens + token) * HQ + h * G + g) * MP + m];
          }
        }
        score[j] = total;
        largest = fmaxf(largest, total);
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
      }
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < (MP + 31) / 32; ++j) {
        const int m = lane + 32 * j;
        score[j] = m < M ? expf(score[j] - largest) : 0.f;
        sum += score[j];
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
#pragma unroll
      for (int j = 0; j < (MP + 31) / 32; ++j) {
        const int m = lane + 32 * j;
        if (m < MP) prob[g * MP + m] = score[j] / sum;
      }
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
      store_state4(p.final_state_v + state_base + int64_t{m} * V, v0 + quad * 4, V, m < M, state[r]);
    }
  }
}

template <class E, int MP>
__global__ void __launch_bounds__(kClusterThreads, MP <= 64 ? 4 : 2) recurrent_cluster_kernel(GsaParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  constexpr int kKeyQuads = MP / 4, kKeyGroups = kClusterThreads / kKeyQuads, kKeyRows = kHeadTile / kKeyGroups;
  constexpr int kValueQuads = kHeadTile / 4, kValueGroups = kClusterThreads / kValueQuads, kValueRows = MP / kValueGroups;
  static_assert(kKeyGroups * MP == 1024 && kValueGroups * kHeadTile == 1024, "recurrent_cluster_floats");
  const int tile = blockIdx.x, h = blockIdx.y, n = blockIdx.z;  // the cluster spans x: rank = tile
  const int H = p.heads, HQ = p.query_heads, K = p.key_dim, V = p.value_dim, M = p.slots, G = p.groups;
  const int key_tiles = (K + kHeadTile - 1) / kHeadTile;
  const bool has_keys = tile < key_tiles, has_values = tile * kHeadTile < V;
  const int k0 = tile * kHeadTile, v0 = tile * kHeadTile;
  const int key_quad = threadIdx.x % kKeyQuads, key_row = threadIdx.x / kKeyQuads;
  const int value_quad = threadIdx.x % kValueQuads, value_row = threadIdx.x / kValueQuads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  extern __shared__ __align__(16) char smem[];
  float* key = reinterpret_cast<float*>(smem);  // [64]
  float* value = key + kHeadTile;                // [64]
  float* write = value + kHeadTile;              // [MP]
  float* forget = write + MP;                    // [MP]
  float* query = forget + MP;                    // [G][64]
  float* prob = query + G * kHeadTile;           // [G][MP]
  float* partial = prob + G * MP;                // [row groups][G][MP or 64]
  float* exchange = partial + 1024 * G;          // [2][key tiles][G][MP]: scores pushed by each key tile
  int bos, eos;
  sequence_bounds(p, n, bos, eos);
  // Both slices' loads are issued before anything waits on them.
  float state_k[kKeyRows][4], state_v[kValueRows][4];
  const int64_t base_k = (int64_t{n} * H + h) * K * M, base_v = (int64_t{n} * H + h) * M * V;
#pragma unroll
  for (int r = 0; r < kKeyRows; ++r) {
    const int kk = k0 + key_row + r * kKeyGroups;
    const bool valid = has_keys && p.initial_state_k != nullptr && kk < K;
    load_state4(state_k[r], valid ? p.initial_state_k + base_k + int64_t{kk} * M : nullptr, key_quad * 4, M, valid);
  }
#pragma unroll
  for (int r = 0; r < kValueRows; ++r) {
    const int m = value_row + r * kValueGroups;
    const bool valid = has_values && p.initial_state_v != nullptr && m < M;
    load_state4(state_v[r], valid ? p.initial_state_v + base_v + int64_t{m} * V : nullptr, v0 + value_quad * 4, V, valid);
  }
  const E* q = static_cast<const E*>(p.q);
  const E* k = static_cast<const E*>(p.k);
  const E* v = static_cast<const E*>(p.v);
  const E* s = static_cast<const E*>(p.s);
  E* o = static_cast<E*>(p.o);
  for (int64_t token = bos; token < eos; ++token) {
    // Two exchange buffers: a CTA writes this token's buffers only after every CTA of the cluster
    // passed the previous token's barrier, so after everyone read the buffers two tokens back.
    float* scores = exchange + ((token - bos) & 1) * kMaxClusterTiles * G * MP;
    __syncthreads();
    for (int i = threadIdx.x; i < kHeadTile; i += kClusterThreads) {
      key[i] = k0 + i < K ? to_float(k[(token * H + h) * K + k0 + i]) : 0.f;
      value[i] = v0 + i < V ? to_float(v[(token * H + h) * V + v0 + i]) : 0.f;
    }
    for (int i = threadIdx.x; i < MP; i += kClusterThreads) {
      const bool valid = i < M;
      write[i] = valid ? to_float(s[(token * H + h) * M + i]) : 0.f;
      forget[i] = valid ? expf(gate_at<E>(p, (token * H + h) * M + i)) : 1.f;
    }
    for (int i = threadIdx.x; i < G * kHeadTile; i += kClusterThreads) {
      const int g = i / kHeadTile, kk = k0 + i % kHeadTile;
      query[i] = kk < K ? to_float(q[(token * HQ + h * G + g) * K + kk]) : 0.f;
    }
    __syncthreads();
    if (has_keys) {
#pragma unroll
      for (int r = 0; r < kKeyRows; ++r) {
        const float key_value = key[key_row + r * kKeyGroups];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          state_k[r][e] = state_k[r][e] * forget[key_quad * 4 + e] + key_value * write[key_quad * 4 + e];
        }
      }
      for (int g = 0; g < G; ++g) {
        float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int r = 0; r < kKeyRows; ++r) {
          const float query_value = query[g * kHeadTile + key_row + r * kKeyGroups];
#pragma unroll
          for (int e = 0; e < 4; ++e) sum[e] += query_value * state_k[r][e];
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) partial[(key_row * G + g) * MP + key_quad * 4 + e] = sum[e];
      }
      __syncthreads();
      // Pushed into every CTA's shared memory (remote stores do not wait; remote loads would).
      for (int i = threadIdx.x; i < G * MP; i += kClusterThreads) {
        float total = 0.f;
        for (int row = 0; row < kKeyGroups; ++row) total += partial[row * G * MP + i];
        for (unsigned rank = 0; rank < cluster.num_blocks(); ++rank) {
          cluster.map_shared_rank(scores, rank)[tile * G * MP + i] = total * p.scale;
        }
      }
    }
    cluster.sync();  // every key tile's scores are in every CTA's shared memory
    // Softmax of the scores summed over the key tiles in rank order, one warp per query head.
    for (int g = warp; g < G; g += kClusterThreads / 32) {
      float score[(MP + 31) / 32];
      float largest = -INFINITY;
#pragma unroll
      for (int j = 0; j < (MP + 31) / 32; ++j) {
        const int m = lane + 32 * j;
        float total = -INFINITY;
        if (m < M) {
          total = 0.f;
          for (int t = 0; t < key_tiles; ++t) total += scores[(t * G + g) * MP + m];
        }
        score[j] = total;
        largest = fmaxf(largest, total);
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        largest = fmaxf(largest, __shfl_xor_sync(0xffffffffu, largest, offset));
      }
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < (MP + 31) / 32; ++j) {
        const int m = lane + 32 * j;
        score[j] = m < M ? expf(score[j] - largest) : 0.f;
        sum += score[j];
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
#pragma unroll
      for (int j = 0; j < (MP + 31) / 32; ++j) {
        const int m = lane + 32 * j;
        if (m < MP) prob[g * MP + m] = score[j] / sum;
      }
    }
    __syncthreads();
    if (has_values) {
#pragma unroll
      for (int r = 0; r < kValueRows; ++r) {
        const int m = value_row + r * kValueGroups;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          state_v[r][e] = state_v[r][e] * forget[m] + write[m] * value[value_quad * 4 + e];
        }
      }
      for (int g = 0; g < G; ++g) {
        float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int r = 0; r < kValueRows; ++r) {
          const float weight = prob[g * MP + value_row + r * kValueGroups];
#pragma unroll
          for (int e = 0; e < 4; ++e) sum[e] += weight * state_v[r][e];
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) partial[(value_row * G + g) * kHeadTile + value_quad * 4 + e] = sum[e];
      }
      __syncthreads();
      for (int i = threadIdx.x; i < G * kHeadTile; i += kClusterThreads) {
        float total = 0.f;
        for (int row = 0; row < kValueGroups; ++row) total += partial[row * G * kHeadTile + i];
        const int g = i / kHeadTile, vv = v0 + i % kHeadTile;
        if (vv < V) o[(token * HQ + h * G + g) * V + vv] = from_float<E>(total);
      }
    }
  }
  if (p.final_state_k != nullptr && has_keys) {
#pragma unroll
    for (int r = 0; r < kKeyRows; ++r) {
      const int kk = k0 + key_row + r * kKeyGroups;
      store_state4(p.final_state_k + base_k + int64_t{kk} * M, key_quad * 4, M, kk < K, state_k[r]);
    }
  }
  if (p.final_state_v != nullptr && has_values) {
#pragma unroll
    for (int r = 0; r < kValueRows; ++r) {
      const int m = value_row + r * kValueGroups;
      store_state4(p.final_state_v + base_v + int64_t{m} * V, v0 + value_quad * 4, V, m < M, state_v[r]);
    }
  }
  // No remote access follows the last token's barrier: the CTAs may leave.
#endif
}

}  // namespace lintime::cuda
