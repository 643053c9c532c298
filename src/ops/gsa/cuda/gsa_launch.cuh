// Launch sequences of the GSA kernels for one element type E (instantiated once per type in
// gsa_launch_<type>.cu so that the three types compile in parallel). The padded slot count MP
// becomes a compile-time constant through dispatch_slots.
#pragma once

#include "ops/gsa/cuda/gsa_chunk_backward.cuh"
#include "ops/gsa/cuda/gsa_chunk_forward.cuh"
#include "ops/gsa/cuda/gsa_recurrent.cuh"

#include <algorithm>
#include <initializer_list>

namespace lintime::cuda {

template <class F>
cudaError_t dispatch_slots(int padded_slots, F&& f) {
  switch (padded_slots) {
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 128: return f(std::integral_constant<int, 128>{});
    default: return cudaErrorInvalidValue;
  }
}

// Dynamic shared memory of each kernel (mirrors the SmemCarver calls in the kernels).
template <class E, int MP>
struct SmemBytes {
  static constexpr size_t parts = SplitTile<E>::kParts;  // split tiles hold this many slot tiles
  static constexpr size_t chunk_tile = smem_tile_bytes<E>(kChunk, kChunk);  // also 64 x 64 head tiles
  static constexpr size_t slot_tile = smem_tile_bytes<E>(kChunk, MP);
  static constexpr size_t gate_tile = smem_tile_bytes<float>(kChunk, MP);
  static constexpr size_t value_state = smem_tile_bytes<E>(MP, kHeadTile);
  static constexpr size_t forward_keys_intra = 3 * chunk_tile + slot_tile + 2 * gate_tile;
  // The forward's key-state kernel takes its state rounded once; the backward's recomputation split.
  static constexpr size_t decay_row = smem_tile_bytes<float>(1, MP);  // the state kernels' exp(b_L)
  // Two buffers of (k, the decayed write, [q,] b_L), then [q and] the state operand.
  static constexpr size_t forward_keys_state = 2 * (2 * chunk_tile + parts * slot_tile + decay_row) + slot_tile;
  static constexpr size_t recompute_keys_state =
      2 * (chunk_tile + parts * slot_tile + decay_row) + chunk_tile + parts * slot_tile;
  static constexpr size_t forward_values_intra = 2 * slot_tile + gate_tile;
  // Two buffers of (v, the decayed write, b_L), then the scores, p ⊙ e^b and the state operand.
  static constexpr size_t forward_values_state =
      2 * (chunk_tile + parts * slot_tile + decay_row) + chunk_tile + slot_tile + value_state;
  static constexpr size_t backward_values_intra =
      std::max(2 * chunk_tile, gate_tile) + chunk_tile + 2 * slot_tile + 3 * gate_tile;
  static constexpr size_t backward_values_state = 3 * chunk_tile + 2 * parts * slot_tile + parts * value_state + decay_row;
  static constexpr size_t backward_keys_intra = 3 * chunk_tile + 2 * slot_tile + 3 * gate_tile;
  static constexpr size_t backward_keys_state = 3 * chunk_tile + 3 * parts * slot_tile + decay_row;
  static constexpr size_t largest = std::max({forward_keys_intra, recompute_keys_state,
                                              forward_values_intra, forward_values_state,
                                              backward_values_intra, backward_values_state,
                                              backward_keys_intra, backward_keys_state});
};

inline size_t recurrent_keys_smem(int padded_slots, int groups) {
  const int row_groups = kThreads / (padded_slots / 4);
  return sizeof(float) * (kHeadTile + 2 * padded_slots + groups * kHeadTile +
                          static_cast<size_t>(row_groups) * groups * padded_slots);
}
inline size_t recurrent_values_smem(int padded_slots, int groups) {
  const int row_groups = kThreads / (kHeadTile / 4);
  return sizeof(float) * (kHeadTile + 2 * padded_slots + groups * padded_slots +
                          static_cast<size_t>(row_groups) * groups * kHeadTile);
}

// Kernels asking for more than the default 48 KB of dynamic shared memory must opt in.
template <class Kernel>
cudaError_t allow_shared_memory(Kernel kernel, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
}

template <class Kernel, class... Args>
cudaError_t launch_blocks(Kernel kernel, dim3 grid, int threads, size_t smem, cudaStream_t stream,
                          const Args&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  const cudaError_t status = allow_shared_memory(kernel, smem);
  if (status != cudaSuccess) return status;
  kernel<<<grid, threads, smem, stream>>>(args...);
  return cudaGetLastError();
}

template <class Kernel, class... Args>
cudaError_t launch(Kernel kernel, dim3 grid, size_t smem, cudaStream_t stream, const Args&... args) {
  return launch_blocks(kernel, grid, kThreads, smem, stream, args...);
}

// Whether the current device takes programmatic dependent launches (compute capability 9+).
inline bool dependent_launch_supported() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  return major >= 9;
}

// launch, as a programmatic dependent of the kernel before it in the stream: it may start while
// that kernel runs and must wait for it (griddepcontrol.wait) before reading its outputs.
template <class Kernel, class... Args>
cudaError_t launch_dependent(Kernel kernel, dim3 grid, size_t smem, cudaStream_t stream, const Args&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  const cudaError_t status = allow_shared_memory(kernel, smem);
  if (status != cudaSuccess) return status;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = dependent_launch_supported() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, args...);
}

#define LINTIME_TRY(call)                              \
  do {                                                 \
    const cudaError_t lintime_status_ = (call);        \
    if (lintime_status_ != cudaSuccess) return lintime_status_; \
  } while (0)

inline int tiles_of(int dim) { return (dim + kHeadTile - 1) / kHeadTile; }

// The scans between the phases of segmented sweeps (segment_scan_kernel), per state.
enum class SweptState { keys, grad_keys, values, grad_values };

template <int MP>
cudaError_t scan_segments(const GsaParams& p, SweptState which, cudaStream_t stream) {
  const bool keys = which == SweptState::keys || which == SweptState::grad_keys;
  const int rows = keys ? p.key_dim : p.slots, cols = keys ? p.slots : p.value_dim;
  const dim3 grid((rows * cols + kThreads - 1) / kThreads, p.heads, p.num_sequences);
  switch (which) {
    case SweptState::keys:
      return launch(segment_scan_kernel<MP, true, false>, grid, 0, stream, p, p.segment_states_k,
                    p.initial_state_k, rows, cols);
    case SweptState::grad_keys:
      return launch(segment_scan_kernel<MP, true, true>, grid, 0, stream, p, p.segment_grad_states_k,
                    p.grad_final_state_k, rows, cols);
    case SweptState::values:
      return launch(segment_scan_kernel<MP, false, false>, grid, 0, stream, p, p.segment_states_v,
                    p.initial_state_v, rows, cols);
    case SweptState::grad_values:
      return launch(segment_scan_kernel<MP, false, true>, grid, 0, stream, p, p.segment_grad_states_v,
                    p.grad_final_state_v, rows, cols);
  }
  return cudaErrorInvalidValue;
}

// A state kernel over every sweep (grid z: sweeps x roles): one launch when sequences are not
// segmented; else phase A (local states), the scans of the swept states, phase B.
template <int MP, int kCtaThreads = kThreads, class Kernel>
cudaError_t launch_sweeps(Kernel kernel, int head_tiles, int roles, size_t smem, cudaStream_t stream,
                          const GsaParams& p, std::initializer_list<SweptState> swept) {
  const dim3 grid(head_tiles, p.heads, p.num_sequences * p.segments * roles);
  if (p.segments == 1) return launch_blocks(kernel, grid, kCtaThreads, smem, stream, p);
  GsaParams local = p;
  local.sweep_local = true;
  LINTIME_TRY(launch_blocks(kernel, grid, kCtaThreads, smem, stream, local));
  for (const SweptState which : swept) LINTIME_TRY(scan_segments<MP>(p, which, stream));
  return launch_blocks(kernel, grid, kCtaThreads, smem, stream, p);
}

inline cudaError_t prepare_chunks(const GsaParams& p, cudaStream_t stream) {
  if (p.cu_seqlens == nullptr) return cudaSuccess;
  chunk_offsets_kernel<<<1, 32, 0, stream>>>(p);
  return cudaGetLastError();
}

// Forward internals: b, ok, p and the pass-2 intra-chunk scores (the final key state if asked).
// for_backward: ok is computed with the split key state (see forward_keys_state_kernel).
template <class E, int MP>
cudaError_t forward_internals(const GsaParams& p, cudaStream_t stream, bool for_backward) {
  using S = SmemBytes<E, MP>;
  const dim3 chunks(p.max_chunks, p.heads);
  constexpr int kParts = SplitTile<E>::kParts;
  LINTIME_TRY(launch(gate_cumsum_kernel<E, MP>, chunks, 0, stream, p));
  LINTIME_TRY(launch(forward_keys_intra_kernel<E, MP>, chunks, S::forward_keys_intra, stream, p));
  LINTIME_TRY(cudaMemsetAsync(p.slot_scores, 0, sizeof(float) * p.total_tokens * p.query_heads * MP, stream));
  if (for_backward) {
    LINTIME_TRY(launch_sweeps<MP>(forward_keys_state_kernel<E, MP, true>, tiles_of(p.key_dim), 1,
                                  S::recompute_keys_state, stream, p, {SweptState::keys}));
  } else {
    LINTIME_TRY(launch_sweeps<MP>(forward_keys_state_kernel<E, MP, false>, tiles_of(p.key_dim), 1,
                                  S::forward_keys_state, stream, p, {SweptState::keys}));
  }
  // The forward's o takes p ⊙ exp(b) rounded once; the backward's reverse sweep split.
  GsaParams values = p;
  values.decayed_probability_parts = for_backward ? kParts : 1;
  LINTIME_TRY(launch(forward_values_intra_kernel<E, MP>, chunks, S::forward_values_intra, stream, values));
  return cudaSuccess;
}

template <class E>
cudaError_t chunk_forward(const GsaParams& p, cudaStream_t stream) {
  LINTIME_TRY(prepare_chunks(p, stream));
  return dispatch_slots(p.padded_slots, [&](auto slots) -> cudaError_t {
    constexpr int MP = decltype(slots)::value;
    LINTIME_TRY((forward_internals<E, MP>(p, stream, p.internals_for_backward)));
    LINTIME_TRY(launch_sweeps<MP>(forward_values_state_kernel<E, MP>, tiles_of(p.value_dim), 1,
                                  SmemBytes<E, MP>::forward_values_state, stream, p, {SweptState::values}));
    return cudaSuccess;
  });
}

template <class E>
cudaError_t chunk_backward(const GsaParams& params, cudaStream_t stream) {
  LINTIME_TRY(prepare_chunks(params, stream));
  return dispatch_slots(params.padded_slots, [&](auto slots) -> cudaError_t {
    constexpr int MP = decltype(slots)::value;
    using S = SmemBytes<E, MP>;
    GsaParams p = params;
    p.final_state_k = nullptr;  // the recomputation writes no final state
    p.final_state_v = nullptr;
    if (!p.internals_for_backward) LINTIME_TRY((forward_internals<E, MP>(p, stream, /*for_backward=*/true)));
    const dim3 chunks(p.max_chunks, p.heads);
    LINTIME_TRY(launch(backward_values_intra_kernel<E, MP>, chunks, S::backward_values_intra, stream, p));
    LINTIME_TRY(cudaMemsetAsync(p.grad_probabilities, 0, sizeof(float) * p.total_tokens * p.query_heads * MP, stream));
    LINTIME_TRY(cudaMemsetAsync(p.grad_slot_write, 0, sizeof(float) * p.total_tokens * p.heads * MP, stream));
    LINTIME_TRY((launch_sweeps<MP, kStateThreads>(backward_values_state_kernel<E, MP>, tiles_of(p.value_dim), 2,
                                                  S::backward_values_state, stream, p,
                                                  {SweptState::values, SweptState::grad_values})));
    LINTIME_TRY(launch(backward_keys_intra_kernel<E, MP>, chunks, S::backward_keys_intra, stream, p));
    LINTIME_TRY(launch_sweeps<MP>(backward_keys_state_kernel<E, MP>, tiles_of(p.key_dim), 2,
                                  S::backward_keys_state, stream, p,
                                  {SweptState::keys, SweptState::grad_keys}));
    LINTIME_TRY(launch(gate_grad_chunk_kernel<E, MP>, chunks, 0, stream, p));
    LINTIME_TRY(launch(gate_grad_carry_kernel<MP>, dim3(p.num_sequences, p.heads), 0, stream, p));
    LINTIME_TRY(launch(gate_grad_finish_kernel<E, MP>, chunks, 0, stream, p));
    return cudaSuccess;
  });
}

// Shared memory of recurrent_step_kernel, and whether it takes these params: one token per
// sequence, 16-byte state rows, at most 8 query heads per state (the registers of its sums), and
// a CTA per SM at least (fewer (head, sequence) pairs: the two kernels' 64-row tiles spread wider).
inline size_t recurrent_step_smem(const GsaParams& p) {
  return sizeof(float) * static_cast<size_t>(recurrent_step_floats(p.padded_slots, p.groups, p.key_dim, p.value_dim));
}
inline bool recurrent_step_fits(const GsaParams& p) {
  return p.cu_seqlens == nullptr && p.seqlen == 1 && p.slots % 4 == 0 && p.value_dim % 4 == 0 &&
         p.groups <= 8 && recurrent_step_smem(p) <= 200 * 1024 &&
         int64_t{p.num_sequences} * p.heads >= p.multiprocessors;
}

// S: the states' stored type (float, or __nv_bfloat16 when GsaParams::bfloat16_states).
template <class E, class S>
cudaError_t recurrent_forward_stored(const GsaParams& p, cudaStream_t stream) {
  return dispatch_slots(p.padded_slots, [&](auto slots) -> cudaError_t {
    constexpr int MP = decltype(slots)::value;
    if (recurrent_step_fits(p)) {
      const dim3 grid(p.heads, p.num_sequences);
      return p.groups == 1
                 ? launch_blocks(recurrent_step_kernel<E, MP, 1, S>, grid, kStepThreads, recurrent_step_smem(p), stream, p)
                 : launch_blocks(recurrent_step_kernel<E, MP, 8, S>, grid, kStepThreads, recurrent_step_smem(p), stream, p);
    }
    LINTIME_TRY(launch(recurrent_keys_kernel<E, MP, S>, dim3(tiles_of(p.key_dim), p.heads, p.num_sequences),
                       recurrent_keys_smem(MP, p.groups), stream, p));
    LINTIME_TRY(launch_dependent(recurrent_values_kernel<E, MP, S>,
                                 dim3(tiles_of(p.value_dim), p.heads, p.num_sequences),
                                 recurrent_values_smem(MP, p.groups), stream, p));
    return cudaSuccess;
  });
}

template <class E>
cudaError_t recurrent_forward(const GsaParams& p, cudaStream_t stream) {
  return p.bfloat16_states ? recurrent_forward_stored<E, __nv_bfloat16>(p, stream)
                           : recurrent_forward_stored<E, float>(p, stream);
}

template <class E>
size_t chunk_smem_bytes(int padded_slots) {
  switch (padded_slots) {
    case 32: return SmemBytes<E, 32>::largest;
    case 64: return SmemBytes<E, 64>::largest;
    case 128: return SmemBytes<E, 128>::largest;
    default: return ~size_t{0};
  }
}

#define LINTIME_INSTANTIATE_GSA_LAUNCHERS(E)                                      \
  template cudaError_t chunk_forward<E>(const GsaParams&, cudaStream_t);         \
  template cudaError_t chunk_backward<E>(const GsaParams&, cudaStream_t);        \
  template cudaError_t recurrent_forward<E>(const GsaParams&, cudaStream_t);     \
  template size_t chunk_smem_bytes<E>(int);

}  // namespace lintime::cuda
