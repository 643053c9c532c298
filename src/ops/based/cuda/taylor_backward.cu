// Fused backward of the Taylor linear attention prefill (see taylor_cuda.h for the design). Both
// kernels follow the prefill's layout: one CTA of 8 warps per (head, sequence), chunks of 64
// tokens, a [160 × 64] state in registers (warp w: rows 80 (w / 4), columns 16 (w % 4)),
// products on tensor cores with fp32 accumulation, and the intra-chunk matrices that multiply
// other 16-bit operands (A, dx) split in two 16-bit parts.
#include "ops/based/cuda/taylor_cuda.h"
#include "ops/based/cuda/taylor_tiles.cuh"

namespace lintime::cuda {
namespace {

using namespace taylor;

// fp32 rows of ∂L/∂φ [64 tokens × 160]: one more column so that lanes on consecutive tokens
// read distinct banks.
constexpr int kGradLd = kFeatures + 1;

template <class E>
struct BackwardSmem {
  static constexpr int kPadE = kPad<E>;
  static constexpr int x_ld = kD + kPadE, v_ld = kValues + kPadE, phi_ld = kFeatures + kPadE;
  static constexpr int s_ld = kValues + kPadE, a_ld = kTokens + kPadE;
  static constexpr size_t x_bytes = sizeof(E) * kTokens * x_ld;  // q, k
  static constexpr size_t v_bytes = sizeof(E) * kTokens * v_ld;  // v, do, o, dn
  static constexpr size_t phi_bytes = sizeof(E) * kTokens * phi_ld;
  static constexpr size_t s_bytes = sizeof(E) * kFeatures * s_ld;
  static constexpr size_t a_bytes = sizeof(E) * kTokens * a_ld;
  static constexpr size_t grad_bytes = sizeof(float) * kTokens * kGradLd;
  static constexpr size_t part_bytes = sizeof(float) * 2 * kTokens * kD;  // two halves' dq or dk
  static constexpr size_t z_bytes = sizeof(float) * 2 * kFeatures;       // z or dz, two partial sums
  static constexpr size_t token_bytes = sizeof(float) * kTokens;
  // Queries kernel: double-buffered q, k, v, do, o; φ, S, dn, dx (two parts), ∂L/∂φ(q), the dq
  // halves, z, the three normaliser parts, 1/d and dd.
  static constexpr size_t queries_buffer = 2 * x_bytes + 3 * v_bytes;
  static constexpr size_t queries_total = 2 * queries_buffer + phi_bytes + s_bytes + v_bytes + 2 * a_bytes +
                                          grad_bytes + part_bytes + z_bytes + 5 * token_bytes;
  // Keys kernel: double-buffered q, k, v, do, 1/d, dd; φ, dS, dn, Aᵀ and dxᵀ (two parts each),
  // ∂L/∂φ(k), the dk halves, dz.
  static constexpr size_t keys_buffer = 2 * x_bytes + 2 * v_bytes + 2 * token_bytes;
  static constexpr size_t keys_total =
      2 * keys_buffer + phi_bytes + s_bytes + v_bytes + 4 * a_bytes + grad_bytes + part_bytes + z_bytes;
  static constexpr size_t total = queries_total > keys_total ? queries_total : keys_total;
  static_assert(x_bytes % 16 == 0 && v_bytes % 16 == 0 && grad_bytes % 16 == 0, "tiles start on 16 bytes");
};

// Issues the copies of 64 floats of a [B, H, T_pad] workspace row from `src` (chunk-aligned:
// 16-byte pieces), zero past len.
__device__ __forceinline__ void load_token_floats(float* dst, const float* src, int len) {
  for (int i = threadIdx.x; i < kTokens / 4; i += kThreads) copy_async_16(dst + 4 * i, src + 4 * i, 4 * i < len);
}

// Stores the warp's share of a [160 × 64] state (rows 80 half, columns 16 m) rounded to E.
template <class E>
__device__ __forceinline__ void store_state_tile(SmemTile<E> tile, const float (&state)[kStateRowTiles][kStateColumnTiles][4],
                                                 int half, int m) {
#pragma unroll
  for (int i = 0; i < kStateRowTiles; ++i) {
#pragma unroll
    for (int j = 0; j < kStateColumnTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        store_pair(tile.at(80 * half + 16 * i + acc_row(e), 16 * m + acc_col(j, e)), state[i][j][e], state[i][j][e + 1]);
      }
    }
  }
}

// acc (a 16 × 80 slab of ∂L/∂φ: rows 16 m, features 80 half) + w_t · z_f into grad [64 × kGradLd]
// (z in two partial sums; w_t = 1 when weight is null).
__device__ __forceinline__ void store_feature_grad(float* grad, const float (&acc)[10][4], const float* weight,
                                                   const float* z_parts, int m, int half) {
#pragma unroll
  for (int j = 0; j < 10; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int t = 16 * m + acc_row(e), f = 80 * half + acc_col(j, e);
      const float w = weight != nullptr ? weight[t] : 1.f;
      grad[t * kGradLd + f] = acc[j][e] + w * (z_parts[f] + z_parts[kFeatures + f]);
    }
  }
}

// The warp's product of its own 16 × 32 block of a split matrix (rows 16 m, columns 32 half, in
// hi and lo) with rows 32 half .. of x [64, 16], stored into parts[half] [64, 16] (fp32).
template <class E>
__device__ __forceinline__ void block_times_rows16(float* parts, SmemTile<E> hi, SmemTile<E> lo, SmemTile<E> x, int m,
                                                   int half) {
  float acc[2][4];
  zero(acc);
  const SmemTile<E> x_rows{x.data + 32 * half * x.ld, x.ld};
  warp_mma<E, 2>(acc, SmemTile<E>{lo.data + 32 * half, lo.ld}, false, 16 * m, x_rows, false, 0, 32);
  warp_mma<E, 2>(acc, SmemTile<E>{hi.data + 32 * half, hi.ld}, false, 16 * m, x_rows, false, 0, 32);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) parts[(half * kTokens + 16 * m + acc_row(e)) * kD + acc_col(j, e)] = acc[j][e];
  }
}

// dx for the token of this thread in the contraction layout (token (w % 2) 32 + lane, dims
// 4 (w / 2) ..): ∂φ/∂x ᵀ g + (parts[0] + parts[1]) / 4, stored as four elements.
template <class E>
__device__ __forceinline__ void store_input_grad(E* dst, SmemTile<E> x_tile, const float* grad, const float* parts,
                                                 int t, int part) {
  float x[kD], dx[4];
  load_row16(x, x_tile, t);
  feature_gradient(part, dx, grad + t * kGradLd, x);
  alignas(8) E out[4];
#pragma unroll
  for (int ii = 0; ii < 4; ++ii) {
    const int i = 4 * part + ii;
    out[ii] = from_float<E>(dx[ii] + 0.25f * (parts[t * kD + i] + parts[(kTokens + t) * kD + i]));
  }
  *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(out);
}

template <class E>
__global__ void __launch_bounds__(kThreads, 1) taylor_backward_queries_kernel(TaylorBackwardParams p) {
  using S = BackwardSmem<E>;
  const int h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Products: rows 16 m of the chunk, columns 32 half (or features 80 half); state: rows
  // 80 half, columns 16 m.
  const int m = warp % 4, half = warp / 4;
  const int H = p.heads, V = p.value_dim, T = p.seqlen;
  extern __shared__ __align__(16) char smem[];
  char* next = smem;
  auto carve = [&](size_t bytes) { char* at = next; next += (bytes + 15) / 16 * 16; return at; };
  char* buffers = carve(2 * S::queries_buffer);
  auto tile_of = [&](int buffer, size_t offset, int ld) {
    return SmemTile<E>{reinterpret_cast<E*>(buffers + buffer * S::queries_buffer + offset), ld};
  };
  auto q_tile_of = [&](int i) { return tile_of(i, 0, S::x_ld); };
  auto k_tile_of = [&](int i) { return tile_of(i, S::x_bytes, S::x_ld); };
  auto v_tile_of = [&](int i) { return tile_of(i, 2 * S::x_bytes, S::v_ld); };
  auto do_tile_of = [&](int i) { return tile_of(i, 2 * S::x_bytes + S::v_bytes, S::v_ld); };
  auto o_tile_of = [&](int i) { return tile_of(i, 2 * S::x_bytes + 2 * S::v_bytes, S::v_ld); };
  SmemTile<E> phi{reinterpret_cast<E*>(carve(S::phi_bytes)), S::phi_ld};
  SmemTile<E> state_tile{reinterpret_cast<E*>(carve(S::s_bytes)), S::s_ld};
  SmemTile<E> dn_tile{reinterpret_cast<E*>(carve(S::v_bytes)), S::v_ld};
  SmemTile<E> dx_hi{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  SmemTile<E> dx_lo{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  float* grad = reinterpret_cast<float*>(carve(S::grad_bytes));      // ∂L/∂φ(q) [64, kGradLd]
  float* dq_parts = reinterpret_cast<float*>(carve(S::part_bytes));  // [2][64][16]
  float* z_parts = reinterpret_cast<float*>(carve(S::z_bytes));      // [2][160]
  float* row_sums = reinterpret_cast<float*>(carve(3 * S::token_bytes));  // φ(q)·z, A's halves
  float* inverse = reinterpret_cast<float*>(carve(S::token_bytes));       // 1 / d_t
  float* norm_grad = reinterpret_cast<float*>(carve(S::token_bytes));     // dd_t

  const E* q = static_cast<const E*>(p.q);
  const E* k = static_cast<const E*>(p.k);
  const E* v = static_cast<const E*>(p.v);
  const E* o = static_cast<const E*>(p.o);
  const E* dout = static_cast<const E*>(p.dout);
  E* dq = static_cast<E*>(p.dq);
  const int64_t token0 = int64_t{b} * T;
  const int64_t workspace_row = (int64_t{b} * H + h) * p.padded_seqlen;
  const bool vector_v = V % 8 == 0 && (reinterpret_cast<uintptr_t>(p.v) | reinterpret_cast<uintptr_t>(p.o) |
                                       reinterpret_cast<uintptr_t>(p.dout)) % 16 == 0;
  for (int i = threadIdx.x; i < 2 * kFeatures; i += kThreads) z_parts[i] = 0.f;
  auto load = [&](int buffer, int start, int len) {
    load_rows16(q_tile_of(buffer), q, token0, H, h, start, len);
    load_rows16(k_tile_of(buffer), k, token0, H, h, start, len);
    load_rows_v(v_tile_of(buffer), v, token0, H, h, V, 0, start, len, vector_v);
    load_rows_v(do_tile_of(buffer), dout, token0, H, h, V, 0, start, len, vector_v);
    load_rows_v(o_tile_of(buffer), o, token0, H, h, V, 0, start, len, vector_v);
    commit_copies();
  };
  load(0, 0, min(kTokens, T));

  float state[kStateRowTiles][kStateColumnTiles][4];
#pragma unroll
  for (int i = 0; i < kStateRowTiles; ++i) zero(state[i]);

  for (int start = 0, chunk = 0; start < T; start += kTokens, ++chunk) {
    const int len = min(kTokens, T - start);
    const SmemTile<E> q_tile = q_tile_of(chunk % 2), k_tile = k_tile_of(chunk % 2), v_tile = v_tile_of(chunk % 2);
    const SmemTile<E> do_tile = do_tile_of(chunk % 2), o_tile = o_tile_of(chunk % 2);
    wait_copies<0>();
    __syncthreads();  // this chunk's tiles visible; the previous chunk's readers done
    if (start + kTokens < T) load((chunk + 1) % 2, start + kTokens, min(kTokens, T - start - kTokens));

    // S at the chunk start (rounded once) and φ(q).
    store_state_tile(state_tile, state, half, m);
    build_features(phi, q_tile);
    __syncthreads();

    // Scores s_ts = q_t·k_s / 4 (rows 16 m, columns 32 half), kept for dx; A's row sums and
    // φ(q)·z make the normaliser d_t.
    float scores[4][4];
    zero(scores);
    warp_mma<E, 4>(scores, q_tile, false, 16 * m, k_tile, true, 32 * half, kD);
    {
      float sums[2] = {0.f, 0.f};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int t = 16 * m + acc_row(e), s = 32 * half + acc_col(j, e);
          const float x = scores[j][e] * 0.25f;
          scores[j][e] = x;
          if (s <= t && s < len) sums[e / 2] += 1.f + x + 0.5f * x * x;
        }
      }
      store_quad_row_sums(row_sums + (1 + half) * kTokens, sums, 16 * m);
    }
    if (p.normalize) features_dot_z(row_sums, phi, z_parts);
    __syncthreads();

    // Per token (four threads, 16 columns each): 1 / d_t, dd_t = −(do_t·o_t) / d_t and
    // dn_t = do_t / d_t (rows past the end: zero).
    {
      const int t = threadIdx.x / 4, part = threadIdx.x % 4;
      const float inv =
          p.normalize ? 1.f / (row_sums[t] + row_sums[kTokens + t] + row_sums[2 * kTokens + t] + p.eps) : 1.f;
      float dot = 0.f;
      alignas(16) E dn[16];
#pragma unroll
      for (int piece = 0; piece < 2; ++piece) {
        const uint4 d_packed = *reinterpret_cast<const uint4*>(do_tile.at(t, 16 * part + 8 * piece));
        const uint4 o_packed = *reinterpret_cast<const uint4*>(o_tile.at(t, 16 * part + 8 * piece));
        const E* d_values = reinterpret_cast<const E*>(&d_packed);
        const E* o_values = reinterpret_cast<const E*>(&o_packed);
#pragma unroll
        for (int c = 0; c < 8; ++c) {
          const float d = to_float(d_values[c]);
          dot += d * to_float(o_values[c]);
          dn[8 * piece + c] = from_float<E>(t < len ? d * inv : 0.f);
        }
      }
      *reinterpret_cast<uint4*>(dn_tile.at(t, 16 * part)) = *reinterpret_cast<const uint4*>(dn);
      *reinterpret_cast<uint4*>(dn_tile.at(t, 16 * part + 8)) = *reinterpret_cast<const uint4*>(dn + 8);
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      const float dd = p.normalize && t < len ? -inv * dot : 0.f;
      if (part == 0) {
        inverse[t] = inv;
        norm_grad[t] = dd;
        if (t < len) {
          p.inverse_normalizer[workspace_row + start + t] = inv;
          p.normalizer_grad[workspace_row + start + t] = dd;
        }
      }
    }
    __syncthreads();

    // dA = dn vᵀ + dd (s ≤ t), dx = dA ⊙ (1 + s) for the warp's block, then its share of
    // dx k (into dq_parts); ∂L/∂φ(q) = dn Sᵀ + dd zᵀ (features 80 half).
    {
      float da[4][4];
      zero(da);
      warp_mma<E, 4>(da, dn_tile, false, 16 * m, v_tile, true, 32 * half, kValues);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          const int t = 16 * m + acc_row(e), s = 32 * half + acc_col(j, e);
          float dx[2];
#pragma unroll
          for (int d = 0; d < 2; ++d) {
            dx[d] = (s + d <= t && s + d < len) ? (da[j][e + d] + norm_grad[t]) * (1.f + scores[j][e + d]) : 0.f;
          }
          store_split_pair(dx_hi, dx_lo, t, s, dx[0], dx[1]);
        }
      }
      __syncwarp();  // the warp reads back its own block
      block_times_rows16(dq_parts, dx_hi, dx_lo, k_tile, m, half);
      float g[10][4];
      zero(g);
      warp_mma<E, 10>(g, dn_tile, false, 16 * m, state_tile, true, 80 * half, kValues);
      store_feature_grad(grad, g, norm_grad, z_parts, m, half);
    }
    build_features(phi, k_tile);  // φ(q) was last read before the previous barrier
    __syncthreads();

    // dq = ∂φ(q)/∂q ᵀ ∂L/∂φ(q) + dx k / 4.
    {
      const int t = (warp % 2) * 32 + lane, part = warp / 2;
      if (t < len) store_input_grad(dq + ((token0 + start + t) * H + h) * kD + 4 * part, q_tile, grad, dq_parts, t, part);
    }
    // S += φ(k)ᵀ v; z += Σ_t φ(k_t).
    warp_mma_rows<E, kStateRowTiles, kStateColumnTiles>(state, phi, true, 80 * half, v_tile, false, 16 * m, kTokens);
    add_feature_sums(z_parts, phi, len, nullptr);
  }
}

template <class E>
__global__ void __launch_bounds__(kThreads, 1) taylor_backward_keys_kernel(TaylorBackwardParams p) {
  using S = BackwardSmem<E>;
  const int h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Products: rows 16 m (keys s), columns 32 half (queries t, or features 80 half); dS: rows
  // 80 half, columns 16 m.
  const int m = warp % 4, half = warp / 4;
  const int H = p.heads, V = p.value_dim, T = p.seqlen;
  extern __shared__ __align__(16) char smem[];
  char* next = smem;
  auto carve = [&](size_t bytes) { char* at = next; next += (bytes + 15) / 16 * 16; return at; };
  char* buffers = carve(2 * S::keys_buffer);
  auto tile_of = [&](int buffer, size_t offset, int ld) {
    return SmemTile<E>{reinterpret_cast<E*>(buffers + buffer * S::keys_buffer + offset), ld};
  };
  auto q_tile_of = [&](int i) { return tile_of(i, 0, S::x_ld); };
  auto k_tile_of = [&](int i) { return tile_of(i, S::x_bytes, S::x_ld); };
  auto v_tile_of = [&](int i) { return tile_of(i, 2 * S::x_bytes, S::v_ld); };
  auto do_tile_of = [&](int i) { return tile_of(i, 2 * S::x_bytes + S::v_bytes, S::v_ld); };
  auto inverse_of = [&](int i) {
    return reinterpret_cast<float*>(buffers + i * S::keys_buffer + 2 * S::x_bytes + 2 * S::v_bytes);
  };
  auto norm_grad_of = [&](int i) { return inverse_of(i) + kTokens; };
  SmemTile<E> phi{reinterpret_cast<E*>(carve(S::phi_bytes)), S::phi_ld};
  SmemTile<E> dstate_tile{reinterpret_cast<E*>(carve(S::s_bytes)), S::s_ld};
  SmemTile<E> dn_tile{reinterpret_cast<E*>(carve(S::v_bytes)), S::v_ld};
  SmemTile<E> at_hi{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};  // Aᵀ [s][t]
  SmemTile<E> at_lo{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  SmemTile<E> dxt_hi{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};  // dxᵀ [s][t]
  SmemTile<E> dxt_lo{reinterpret_cast<E*>(carve(S::a_bytes)), S::a_ld};
  float* grad = reinterpret_cast<float*>(carve(S::grad_bytes));      // ∂L/∂φ(k) [64, kGradLd]
  float* dk_parts = reinterpret_cast<float*>(carve(S::part_bytes));  // [2][64][16]
  float* dz_parts = reinterpret_cast<float*>(carve(S::z_bytes));     // [2][160]

  const E* q = static_cast<const E*>(p.q);
  const E* k = static_cast<const E*>(p.k);
  const E* v = static_cast<const E*>(p.v);
  const E* dout = static_cast<const E*>(p.dout);
  E* dk = static_cast<E*>(p.dk);
  E* dv = static_cast<E*>(p.dv);
  const int64_t token0 = int64_t{b} * T;
  const int64_t workspace_row = (int64_t{b} * H + h) * p.padded_seqlen;
  const bool vector_v = V % 8 == 0 && (reinterpret_cast<uintptr_t>(p.v) | reinterpret_cast<uintptr_t>(p.dout) |
                                       reinterpret_cast<uintptr_t>(p.dv)) % 16 == 0;
  for (int i = threadIdx.x; i < 2 * kFeatures; i += kThreads) dz_parts[i] = 0.f;
  auto load = [&](int buffer, int start, int len) {
    load_rows16(q_tile_of(buffer), q, token0, H, h, start, len);
    load_rows16(k_tile_of(buffer), k, token0, H, h, start, len);
    load_rows_v(v_tile_of(buffer), v, token0, H, h, V, 0, start, len, vector_v);
    load_rows_v(do_tile_of(buffer), dout, token0, H, h, V, 0, start, len, vector_v);
    load_token_floats(inverse_of(buffer), p.inverse_normalizer + workspace_row + start, len);
    load_token_floats(norm_grad_of(buffer), p.normalizer_grad + workspace_row + start, len);
    commit_copies();
  };
  const int chunks = (T + kTokens - 1) / kTokens;
  load(0, (chunks - 1) * kTokens, T - (chunks - 1) * kTokens);

  float dstate[kStateRowTiles][kStateColumnTiles][4];
#pragma unroll
  for (int i = 0; i < kStateRowTiles; ++i) zero(dstate[i]);

  for (int chunk = chunks - 1, step = 0; chunk >= 0; --chunk, ++step) {
    const int start = chunk * kTokens, len = min(kTokens, T - start);
    const SmemTile<E> q_tile = q_tile_of(step % 2), k_tile = k_tile_of(step % 2), v_tile = v_tile_of(step % 2);
    const SmemTile<E> do_tile = do_tile_of(step % 2);
    const float* inverse = inverse_of(step % 2);
    const float* norm_grad = norm_grad_of(step % 2);
    wait_copies<0>();
    __syncthreads();  // this chunk's tiles visible; the previous chunk's readers done
    if (chunk > 0) load((step + 1) % 2, start - kTokens, kTokens);

    // dS of the later chunks (rounded once), φ(k), dn_t = do_t / d_t.
    store_state_tile(dstate_tile, dstate, half, m);
    build_features(phi, k_tile);
    {
      const int t = threadIdx.x / 4, part = threadIdx.x % 4;
      const float inv = t < len ? inverse[t] : 0.f;
      alignas(16) E dn[16];
#pragma unroll
      for (int piece = 0; piece < 2; ++piece) {
        const uint4 packed = *reinterpret_cast<const uint4*>(do_tile.at(t, 16 * part + 8 * piece));
        const E* values = reinterpret_cast<const E*>(&packed);
#pragma unroll
        for (int c = 0; c < 8; ++c) dn[8 * piece + c] = from_float<E>(to_float(values[c]) * inv);
      }
      *reinterpret_cast<uint4*>(dn_tile.at(t, 16 * part)) = *reinterpret_cast<const uint4*>(dn);
      *reinterpret_cast<uint4*>(dn_tile.at(t, 16 * part + 8)) = *reinterpret_cast<const uint4*>(dn + 8);
    }
    __syncthreads();

    // The warp's block of Aᵀ and dxᵀ (keys s = rows 16 m, queries t = columns 32 half, t ≥ s):
    // s_st = k_s·q_t / 4, A = 1 + s + s²/2, dAᵀ = v dnᵀ + dd, dxᵀ = dAᵀ ⊙ (1 + s); then its share
    // of dxᵀ q (into dk_parts); ∂L/∂φ(k) = v dSᵀ + dz (features 80 half); dv = φ(k) dS.
    float dv_acc[4][4];
    zero(dv_acc);
    {
      float scores[4][4], da[4][4];
      zero(scores);
      zero(da);
      warp_mma<E, 4>(scores, k_tile, false, 16 * m, q_tile, true, 32 * half, kD);
      warp_mma<E, 4>(da, v_tile, false, 16 * m, dn_tile, true, 32 * half, kValues);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          const int s = 16 * m + acc_row(e), t = 32 * half + acc_col(j, e);
          float a[2], dx[2];
#pragma unroll
          for (int d = 0; d < 2; ++d) {
            const bool valid = t + d >= s && t + d < len;
            const float x = scores[j][e + d] * 0.25f;
            a[d] = valid ? 1.f + x + 0.5f * x * x : 0.f;
            dx[d] = valid ? (da[j][e + d] + norm_grad[t + d]) * (1.f + x) : 0.f;
          }
          store_split_pair(at_hi, at_lo, s, t, a[0], a[1]);
          store_split_pair(dxt_hi, dxt_lo, s, t, dx[0], dx[1]);
        }
      }
      __syncwarp();  // the warp reads back its own block
      block_times_rows16(dk_parts, dxt_hi, dxt_lo, q_tile, m, half);
      float g[10][4];
      zero(g);
      warp_mma<E, 10>(g, v_tile, false, 16 * m, dstate_tile, true, 80 * half, kValues);
      store_feature_grad(grad, g, nullptr, dz_parts, m, half);  // weight 1: dz itself
      warp_mma<E, 4>(dv_acc, phi, false, 16 * m, dstate_tile, false, 32 * half, kFeatures);
    }
    __syncthreads();

    // dv = φ(k) dS + Aᵀ dn; dk = ∂φ(k)/∂k ᵀ ∂L/∂φ(k) + dxᵀ q / 4; φ(q) for the dS update.
    warp_mma<E, 4>(dv_acc, at_lo, false, 16 * m, dn_tile, false, 32 * half, kTokens);
    warp_mma<E, 4>(dv_acc, at_hi, false, 16 * m, dn_tile, false, 32 * half, kTokens);
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
      const int s = 16 * m + acc_row(e);
      if (s >= len) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = 32 * half + acc_col(j, e);
        if (c >= V) continue;
        E* dst = dv + ((token0 + start + s) * H + h) * V + c;
        if (vector_v) {
          store_pair(dst, dv_acc[j][e], dv_acc[j][e + 1]);
        } else {
          dst[0] = from_float<E>(dv_acc[j][e]);
          if (c + 1 < V) dst[1] = from_float<E>(dv_acc[j][e + 1]);
        }
      }
    }
    {
      const int s = (warp % 2) * 32 + lane, part = warp / 2;
      if (s < len) store_input_grad(dk + ((token0 + start + s) * H + h) * kD + 4 * part, k_tile, grad, dk_parts, s, part);
    }
    build_features(phi, q_tile);  // φ(k) was last read before the previous barrier
    __syncthreads();

    // dS += φ(q)ᵀ dn; dz += Σ_t φ(q_t) dd_t.
    warp_mma_rows<E, kStateRowTiles, kStateColumnTiles>(dstate, phi, true, 80 * half, dn_tile, false, 16 * m, kTokens);
    add_feature_sums(dz_parts, phi, len, norm_grad);
  }
}

template <class E>
cudaError_t launch(const TaylorBackwardParams& p, cudaStream_t stream) {
  const size_t smem = BackwardSmem<E>::total;
  for (const void* kernel : {reinterpret_cast<const void*>(taylor_backward_queries_kernel<E>),
                             reinterpret_cast<const void*>(taylor_backward_keys_kernel<E>)}) {
    const cudaError_t status =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (status != cudaSuccess) return status;
  }
  const dim3 grid(1, p.heads, p.batch);
  if (grid.y == 0 || grid.z == 0 || p.seqlen == 0) return cudaSuccess;
  taylor_backward_queries_kernel<E><<<grid, kThreads, smem, stream>>>(p);
  taylor_backward_keys_kernel<E><<<grid, kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

size_t taylor_backward_smem_bytes() { return BackwardSmem<__nv_bfloat16>::total; }

cudaError_t taylor_backward(const TaylorBackwardParams& params, cudaStream_t stream) {
  return params.half_precision ? launch<__half>(params, stream) : launch<__nv_bfloat16>(params, stream);
}

}  // namespace lintime::cuda
