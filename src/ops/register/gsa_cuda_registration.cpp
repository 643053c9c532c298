// Registers lintime's fused GSA CUDA kernels (ops/gsa/cuda) under the CUDA dispatch key for
// gsa_chunk, gsa_chunk_bwd, gsa_step and gsa_step_. Every check happens here, before the
// torch-free params struct is filled; inputs the kernels do not take (fp64, more than 128
// slots, shared memory beyond the device's limit, empty tensors) go to the general ATen path,
// never to a crash. No host synchronisation: cu_seqlens is checked for shape and dtype only and
// its values are read on the device.
#ifdef LINTIME_WITH_CUDA

#include "core/tensor_checks.h"
#include "ops/gsa/cuda/gsa_cuda.h"
#include "ops/gsa/gsa.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <map>
#include <utility>
#include <vector>

namespace lintime::ops {
namespace {

using OptionalTensor = std::optional<at::Tensor>;
using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using TensorsWithInternals = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>;
using Tensors7 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            at::Tensor>;

constexpr const char* kForwardOp = "lintime::gsa_chunk";
constexpr const char* kBackwardOp = "lintime::gsa_chunk_bwd";
// Inputs with at most this many tokens per sequence (on average, with cu_seqlens) take the
// token-by-token kernels in the forward: their state is read and written once.
constexpr int64_t kRecurrentMaxTokens = 16;

at::Tensor value_or_undefined(const OptionalTensor& tensor) {
  return tensor.has_value() ? *tensor : at::Tensor();
}

std::optional<cuda::ElementType> element_type_of(at::ScalarType type) {
  switch (type) {
    case at::kBFloat16: return cuda::ElementType::bfloat16;
    case at::kHalf: return cuda::ElementType::float16;
    case at::kFloat: return cuda::ElementType::float32;
    default: return std::nullopt;
  }
}

// A copy (or the tensor itself) that the kernels can read: dtype, contiguous, 16-byte aligned.
at::Tensor kernel_ready(const at::Tensor& tensor, at::ScalarType dtype) {
  if (!tensor.defined()) return tensor;
  at::Tensor ready = tensor.to(dtype).contiguous();
  if (reinterpret_cast<uintptr_t>(ready.data_ptr()) % 16 != 0) ready = ready.clone();
  return ready;
}

// A device attribute, queried once per device (the binding asks on every call).
int device_attribute(cudaDeviceAttr attribute, int device) {
  static std::mutex mutex;
  static std::map<std::pair<int, int>, int> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const std::pair<int, int> key{static_cast<int>(attribute), device};
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return cache[key] = value;
}

int max_shared_memory_per_block(int device) {
  return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
}

int multiprocessor_count(int device) { return device_attribute(cudaDevAttrMultiProcessorCount, device); }

// Shapes and dtypes of one call, and whether the fused kernels take it.
struct Problem {
  int64_t batch, time, query_heads, heads, key_dim, value_dim, slots, sequences;
  bool varlen;
  std::optional<cuda::ElementType> element;
  int padded_slots;

  Problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
          const at::Tensor& cu_seqlens)
      : Problem(q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3), s.size(3),
                cu_seqlens.defined() ? cu_seqlens.size(0) - 1 : q.size(0), cu_seqlens.defined(), q.scalar_type()) {}

  // From the sizes alone (the shape function of the kept internals, which runs on no data).
  Problem(int64_t batch, int64_t time, int64_t query_heads, int64_t heads, int64_t key_dim, int64_t value_dim,
          int64_t slots, int64_t sequences, bool varlen, at::ScalarType dtype)
      : batch(batch), time(time), query_heads(query_heads), heads(heads), key_dim(key_dim),
        value_dim(value_dim), slots(slots), sequences(sequences), varlen(varlen), element(element_type_of(dtype)),
        padded_slots(cuda::padded_slots_for(static_cast<int>(std::min<int64_t>(slots, 1 << 20)))) {}

  int64_t tokens() const { return batch * time; }

  bool fused_kernels_fit(const at::Device& device, bool chunked) const {
    if (!element.has_value() || padded_slots == 0) return false;
    if (tokens() == 0 || key_dim == 0 || value_dim == 0 || sequences == 0) return false;
    if (2 * sequences > 65535 || heads > 65535 || tokens() >= (int64_t{1} << 31)) return false;
    if (!chunked) return true;
    return cuda::gsa_chunk_smem_bytes(*element, padded_slots) <=
           static_cast<size_t>(max_shared_memory_per_block(device.index()));
  }

  bool short_sequences() const {
    return varlen ? tokens() <= kRecurrentMaxTokens * sequences : time <= kRecurrentMaxTokens;
  }

  // Segments per sequence for the state kernels' sweeps (gsa_cuda.h): enough sweeps for one per
  // SM, each of at least 4 chunks; 1 when the sequences' sweeps already fill the GPU.
  int sweep_segments(int device) const {
    const int64_t tiles = std::min((key_dim + cuda::kHeadTile - 1) / cuda::kHeadTile,
                                   (value_dim + cuda::kHeadTile - 1) / cuda::kHeadTile);
    const int64_t sweeps = tiles * heads * sequences;
    int64_t segments = (multiprocessor_count(device) + sweeps - 1) / sweeps;
    segments = std::min<int64_t>({segments, 16, std::max<int64_t>(1, max_chunks() / sequences / 4),
                                  65535 / (2 * sequences)});
    return static_cast<int>(std::max<int64_t>(1, segments));
  }

  int64_t max_chunks() const {
    return varlen ? tokens() / cuda::kChunk + sequences
                  : sequences * ((time + cuda::kChunk - 1) / cuda::kChunk);
  }
};

// Tensors the kernels read, kept alive for the call.
struct KernelInputs {
  at::Tensor q, k, v, s, g, initial_state_k, initial_state_v, cu_seqlens, chunk_offsets;
};

KernelInputs prepare_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& s, const at::Tensor& g,
                            const at::Tensor& initial_state_k, const at::Tensor& initial_state_v,
                            const at::Tensor& cu_seqlens, const Problem& problem) {
  const at::ScalarType dtype = q.scalar_type();
  KernelInputs in;
  in.q = kernel_ready(q, dtype);
  in.k = kernel_ready(k, dtype);
  in.v = kernel_ready(v, dtype);
  in.s = kernel_ready(s, dtype);
  // g as it comes when fp32 or the inputs' dtype: the kernels read either (no conversion kernel).
  in.g = kernel_ready(g, g.scalar_type() == dtype ? dtype : at::kFloat);
  in.initial_state_k = kernel_ready(initial_state_k, at::kFloat);
  in.initial_state_v = kernel_ready(initial_state_v, at::kFloat);
  if (cu_seqlens.defined()) {
    in.cu_seqlens = cu_seqlens.to(q.device(), at::kInt, /*non_blocking=*/true).contiguous();
    in.chunk_offsets = at::empty({problem.sequences + 1}, q.options().dtype(at::kInt));
  }
  return in;
}

cuda::GsaParams make_params(const Problem& problem, const KernelInputs& in, double scale) {
  cuda::GsaParams p;
  p.total_tokens = static_cast<int>(problem.tokens());
  p.seqlen = static_cast<int>(problem.time);
  p.num_sequences = static_cast<int>(problem.sequences);
  p.heads = static_cast<int>(problem.heads);
  p.query_heads = static_cast<int>(problem.query_heads);
  p.groups = static_cast<int>(problem.query_heads / problem.heads);
  p.key_dim = static_cast<int>(problem.key_dim);
  p.value_dim = static_cast<int>(problem.value_dim);
  p.slots = static_cast<int>(problem.slots);
  p.padded_slots = problem.padded_slots;
  p.max_chunks = static_cast<int>(problem.max_chunks());
  p.scale = static_cast<float>(scale);
  p.element = *problem.element;
  if (in.cu_seqlens.defined()) {
    p.cu_seqlens = in.cu_seqlens.data_ptr<int>();
    p.chunk_offsets = in.chunk_offsets.data_ptr<int>();
  }
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  p.v = in.v.data_ptr();
  p.s = in.s.data_ptr();
  p.g = in.g.data_ptr();
  p.gate_in_element_type = in.g.scalar_type() != at::kFloat;
  p.initial_state_k = in.initial_state_k.defined() ? in.initial_state_k.data_ptr<float>() : nullptr;
  p.initial_state_v = in.initial_state_v.defined() ? in.initial_state_v.data_ptr<float>() : nullptr;
  return p;
}

// The token-by-token kernels, with their workspace of partial slot scores.
void run_recurrent(const Problem& problem, cuda::GsaParams& p, const at::TensorOptions& options,
                   cudaStream_t stream) {
  const at::Tensor partials = at::empty({(problem.key_dim + cuda::kHeadTile - 1) / cuda::kHeadTile,
                                         problem.tokens(), problem.query_heads, problem.padded_slots},
                                        options.dtype(at::kFloat));
  p.slot_score_partials = partials.data_ptr<float>();
  p.multiprocessors = multiprocessor_count(options.device().index());
  C10_CUDA_CHECK(cuda::gsa_recurrent_forward(p, stream));
}

float* float_pointer(const at::Tensor& tensor) {
  return tensor.defined() ? tensor.data_ptr<float>() : nullptr;
}

// A chunk-blocked split operand of the state kernels [chunks, heads, parts, 64, MP] (gsa_cuda.h).
at::Tensor split_blocks(const Problem& problem, int64_t heads, const at::TensorOptions& options) {
  return at::empty({problem.max_chunks(), heads, cuda::split_parts(*problem.element), cuda::kChunk,
                    problem.padded_slots}, options);
}

// States of every segment of every sequence [N S, H, rows, cols] (segmented sweeps).
at::Tensor segment_buffer(const Problem& problem, int segments, int64_t rows, int64_t cols,
                          const at::TensorOptions& options) {
  return at::empty({problem.sequences * segments, problem.heads, rows, cols}, options);
}

// The internals the chunked kernels keep for the backward, in ForwardWorkspace's order: shape, and
// whether fp32 (else the inputs' element type). One list for the allocation and for the shape
// function that torch.compile's fake kernel asks (gsa_chunk_internals_layout).
struct InternalShape {
  std::vector<int64_t> shape;
  bool float32;
};

std::vector<InternalShape> internal_shapes(const Problem& problem) {
  const int64_t tokens = problem.tokens(), slots = problem.padded_slots;
  const int64_t parts = cuda::split_parts(*problem.element);
  return {{{tokens, problem.heads, slots}, true},                  // gate_cumsum
          {{tokens, problem.query_heads, slots}, true},            // slot_scores
          {{tokens, problem.query_heads, slots}, true},            // slot_scores_intra
          {{tokens, problem.query_heads}, true},                   // key_score_diagonal
          {{tokens, problem.query_heads, slots}, false},           // probabilities
          {{problem.max_chunks(), problem.query_heads, cuda::kChunk, cuda::kChunk}, false},  // value_scores
          {{problem.max_chunks(), problem.heads, parts, cuda::kChunk, slots}, false},       // decayed_write_blocks
          {{problem.max_chunks(), problem.query_heads, parts, cuda::kChunk, slots}, false}};  // ..._probability_
}

// Workspace of the chunked forward internals: allocated by the forward (and kept for the backward
// when training) or by a backward that recomputes them; or, in a backward, the kept ones.
struct ForwardWorkspace {
  at::Tensor gate_cumsum, slot_scores, slot_scores_intra, key_score_diagonal, probabilities, value_scores;
  at::Tensor decayed_write_blocks, decayed_probability_blocks;
  at::Tensor segment_states_k, segment_states_v;

  ForwardWorkspace(const Problem& problem, const at::TensorOptions& options, cuda::GsaParams& p) {
    std::vector<at::Tensor> allocated;
    for (const InternalShape& internal : internal_shapes(problem)) {
      allocated.push_back(at::empty(internal.shape, internal.float32 ? options.dtype(at::kFloat) : options));
    }
    name(allocated);
    point(problem, options, p);
  }

  // The internals kept by the training forward (internals(), same problem); the backward does not
  // recompute them.
  ForwardWorkspace(const Problem& problem, const at::TensorOptions& options, cuda::GsaParams& p,
                   const std::vector<at::Tensor>& kept) {
    TORCH_CHECK(kept.size() == kInternals && kept[0].numel() == problem.tokens() * problem.heads * problem.padded_slots,
                kBackwardOp, ": the kept forward internals do not belong to these inputs (", kept.size(),
                " tensors; expected ", kInternals, " from lintime::gsa_chunk_with_internals on the same inputs)");
    name(kept);
    point(problem, options, p);
    p.internals_for_backward = true;
  }

  static constexpr size_t kInternals = 8;
  std::vector<at::Tensor> internals() const {
    return {gate_cumsum, slot_scores, slot_scores_intra, key_score_diagonal, probabilities,
            value_scores, decayed_write_blocks, decayed_probability_blocks};
  }

 private:
  void name(const std::vector<at::Tensor>& internals) {
    gate_cumsum = internals[0], slot_scores = internals[1], slot_scores_intra = internals[2];
    key_score_diagonal = internals[3], probabilities = internals[4], value_scores = internals[5];
    decayed_write_blocks = internals[6], decayed_probability_blocks = internals[7];
  }

  void point(const Problem& problem, const at::TensorOptions& options, cuda::GsaParams& p) {
    p.gate_cumsum = gate_cumsum.data_ptr<float>();
    p.slot_scores = slot_scores.data_ptr<float>();
    p.slot_scores_intra = slot_scores_intra.data_ptr<float>();
    p.key_score_diagonal = key_score_diagonal.data_ptr<float>();
    p.probabilities = probabilities.data_ptr();
    p.value_scores = value_scores.data_ptr();
    p.decayed_write_blocks = decayed_write_blocks.data_ptr();
    p.decayed_probability_blocks = decayed_probability_blocks.data_ptr();
    const auto f32 = options.dtype(at::kFloat);
    p.segments = problem.sweep_segments(options.device().index());
    if (p.segments > 1) {
      segment_states_k = segment_buffer(problem, p.segments, problem.key_dim, problem.slots, f32);
      segment_states_v = segment_buffer(problem, p.segments, problem.slots, problem.value_dim, f32);
      p.segment_states_k = segment_states_k.data_ptr<float>();
      p.segment_states_v = segment_states_v.data_ptr<float>();
    }
  }
};

// The forward; keep_internals (training): the chunked kernels compute the internals as the
// backward uses them and return them (none from the other paths: their backward recomputes).
TensorsWithInternals chunk_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& s, const at::Tensor& g, double scale,
                                   const OptionalTensor& initial_state_k_in,
                                   const OptionalTensor& initial_state_v_in, bool output_final_state,
                                   const OptionalTensor& cu_seqlens_in, bool keep_internals) {
  const at::Tensor initial_state_k = value_or_undefined(initial_state_k_in);
  const at::Tensor initial_state_v = value_or_undefined(initial_state_v_in);
  const at::Tensor cu_seqlens = value_or_undefined(cu_seqlens_in);
  TORCH_CHECK(g.defined(), kForwardOp, ": g is missing; expected shape [B, T, H, M] "
              "(ABC gates come from abc_gates)");
  gsa_check_inputs(kForwardOp, q, k, v, s, g, initial_state_k, initial_state_v, cu_seqlens,
                   /*read_cu_seqlens=*/false);
  const Problem problem(q, k, v, s, cu_seqlens);
  const bool recurrent = problem.short_sequences();
  if (!problem.fused_kernels_fit(q.device(), !recurrent)) {
    auto [o, final_state_k, final_state_v] = gsa_chunk_fwd(q, k, v, s, g, scale, initial_state_k,
                                                           initial_state_v, output_final_state, cu_seqlens);
    return {o, final_state_k, final_state_v, {}};
  }
  const c10::cuda::CUDAGuard device_guard(q.device());
  const KernelInputs in = prepare_inputs(q, k, v, s, g, initial_state_k, initial_state_v,
                                         cu_seqlens, problem);
  cuda::GsaParams p = make_params(problem, in, scale);
  const auto f32 = q.options().dtype(at::kFloat);
  at::Tensor o = at::empty({problem.batch, problem.time, problem.query_heads, problem.value_dim},
                           q.options());
  at::Tensor final_state_k, final_state_v;
  if (output_final_state) {
    final_state_k = at::empty({problem.sequences, problem.heads, problem.key_dim, problem.slots}, f32);
    final_state_v = at::empty({problem.sequences, problem.heads, problem.slots, problem.value_dim}, f32);
  }
  p.o = o.data_ptr();
  p.final_state_k = float_pointer(final_state_k);
  p.final_state_v = float_pointer(final_state_v);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  std::vector<at::Tensor> internals;
  if (recurrent) {
    run_recurrent(problem, p, q.options(), stream);
  } else {
    ForwardWorkspace workspace(problem, q.options(), p);
    p.internals_for_backward = keep_internals;
    C10_CUDA_CHECK(cuda::gsa_chunk_forward(p, stream));
    if (keep_internals) internals = workspace.internals();
  }
  return {o, final_state_k, final_state_v, internals};
}

Tensors3 gsa_chunk_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& s, const at::Tensor& g, double scale,
                        const OptionalTensor& initial_state_k, const OptionalTensor& initial_state_v,
                        bool output_final_state, const OptionalTensor& cu_seqlens) {
  auto [o, final_state_k, final_state_v, internals] =
      chunk_forward(q, k, v, s, g, scale, initial_state_k, initial_state_v, output_final_state,
                    cu_seqlens, /*keep_internals=*/false);
  return {o, final_state_k, final_state_v};
}

TensorsWithInternals gsa_chunk_with_internals_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const OptionalTensor& initial_state_k,
    const OptionalTensor& initial_state_v, bool output_final_state, const OptionalTensor& cu_seqlens) {
  return chunk_forward(q, k, v, s, g, scale, initial_state_k, initial_state_v, output_final_state,
                       cu_seqlens, /*keep_internals=*/true);
}

// The backward; with the internals kept by the training forward (empty: recomputes them).
Tensors7 chunk_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& s, const at::Tensor& g, double scale,
                        const OptionalTensor& initial_state_k_in,
                        const OptionalTensor& initial_state_v_in,
                        const OptionalTensor& cu_seqlens_in, const at::Tensor& grad_o,
                        const OptionalTensor& grad_final_state_k_in,
                        const OptionalTensor& grad_final_state_v_in,
                        const std::vector<at::Tensor>& internals) {
  const at::Tensor initial_state_k = value_or_undefined(initial_state_k_in);
  const at::Tensor initial_state_v = value_or_undefined(initial_state_v_in);
  const at::Tensor cu_seqlens = value_or_undefined(cu_seqlens_in);
  const at::Tensor grad_final_state_k = value_or_undefined(grad_final_state_k_in);
  const at::Tensor grad_final_state_v = value_or_undefined(grad_final_state_v_in);
  TORCH_CHECK(g.defined(), kBackwardOp, ": g is missing; expected shape [B, T, H, M]");
  gsa_check_inputs(kBackwardOp, q, k, v, s, g, initial_state_k, initial_state_v, cu_seqlens,
                   /*read_cu_seqlens=*/false);
  const Problem problem(q, k, v, s, cu_seqlens);
  check_shape(kBackwardOp, "grad_o", grad_o, {{"B", problem.batch}, {"T", problem.time},
                                              {"HQ", problem.query_heads}, {"V", problem.value_dim}});
  if (grad_final_state_k.defined()) {
    check_shape(kBackwardOp, "grad_final_state_k", grad_final_state_k,
                {{"N", problem.sequences}, {"H", problem.heads}, {"K", problem.key_dim}, {"M", problem.slots}});
  }
  if (grad_final_state_v.defined()) {
    check_shape(kBackwardOp, "grad_final_state_v", grad_final_state_v,
                {{"N", problem.sequences}, {"H", problem.heads}, {"M", problem.slots}, {"V", problem.value_dim}});
  }
  if (!problem.fused_kernels_fit(q.device(), /*chunked=*/true)) {
    return gsa_chunk_bwd(q, k, v, s, g, scale, initial_state_k, initial_state_v, cu_seqlens,
                         grad_o, grad_final_state_k, grad_final_state_v);
  }
  const c10::cuda::CUDAGuard device_guard(q.device());
  const KernelInputs in = prepare_inputs(q, k, v, s, g, initial_state_k, initial_state_v,
                                         cu_seqlens, problem);
  cuda::GsaParams p = make_params(problem, in, scale);
  const ForwardWorkspace forward = internals.empty() ? ForwardWorkspace(problem, q.options(), p)
                                                     : ForwardWorkspace(problem, q.options(), p, internals);
  const auto options = q.options();
  const auto f32 = options.dtype(at::kFloat);
  const int64_t tokens = problem.tokens(), slots = problem.padded_slots;
  const at::Tensor grad_o_ready = kernel_ready(grad_o, q.scalar_type());
  const at::Tensor grad_final_k = kernel_ready(grad_final_state_k, at::kFloat);
  const at::Tensor grad_final_v = kernel_ready(grad_final_state_v, at::kFloat);
  at::Tensor grad_q = at::empty_like(in.q), grad_k = at::empty_like(in.k), grad_v = at::empty_like(in.v);
  // ds and dg in their inputs' dtypes where the kernels write those (the element type or fp32).
  auto gradient_dtype = [&](const at::Tensor& input) {
    return input.scalar_type() == q.scalar_type() ? q.scalar_type() : at::kFloat;
  };
  const std::vector<int64_t> slot_shape = {problem.batch, problem.time, problem.heads, problem.slots};
  at::Tensor grad_s = at::empty(slot_shape, options.dtype(gradient_dtype(s)));
  at::Tensor grad_g = at::empty(slot_shape, options.dtype(gradient_dtype(g)));
  at::Tensor grad_initial_k = initial_state_k.defined() ? at::empty_like(in.initial_state_k) : at::Tensor();
  at::Tensor grad_initial_v = initial_state_v.defined() ? at::empty_like(in.initial_state_v) : at::Tensor();
  at::Tensor grad_probabilities = at::empty({tokens, problem.query_heads, slots}, f32);
  at::Tensor grad_probabilities_intra = at::empty({tokens, problem.query_heads, slots}, f32);
  at::Tensor grad_slot_write_intra = at::empty({tokens, problem.heads, slots}, f32);
  at::Tensor value_score_diagonal = at::empty({tokens, problem.query_heads}, f32);
  at::Tensor grad_slot_write = at::empty({tokens, problem.heads, slots}, f32);
  at::Tensor grad_slot_write_diagonal = at::empty({tokens, problem.heads, slots}, f32);
  at::Tensor grad_slot_scores = at::empty({tokens, problem.query_heads, slots}, options);
  at::Tensor grad_key_scores =
      at::empty({problem.max_chunks(), problem.query_heads, cuda::kChunk, cuda::kChunk}, options);
  at::Tensor decayed_grad_score_blocks = split_blocks(problem, problem.query_heads, options);
  at::Tensor segment_grad_states_k, segment_grad_states_v;
  if (p.segments > 1) {
    segment_grad_states_k = segment_buffer(problem, p.segments, problem.key_dim, problem.slots, f32);
    segment_grad_states_v = segment_buffer(problem, p.segments, problem.slots, problem.value_dim, f32);
    p.segment_grad_states_k = segment_grad_states_k.data_ptr<float>();
    p.segment_grad_states_v = segment_grad_states_v.data_ptr<float>();
  }
  at::Tensor gate_terms = at::empty({tokens, problem.heads, slots}, f32);
  at::Tensor gate_final = at::zeros({problem.sequences, problem.heads, slots}, f32);
  at::Tensor chunk_totals = at::empty({problem.max_chunks(), problem.heads, slots}, f32);
  p.grad_o = grad_o_ready.data_ptr();
  p.grad_final_state_k = float_pointer(grad_final_k);
  p.grad_final_state_v = float_pointer(grad_final_v);
  p.grad_q = grad_q.data_ptr();
  p.grad_k = grad_k.data_ptr();
  p.grad_v = grad_v.data_ptr();
  p.grad_s = grad_s.data_ptr();
  p.grad_g = grad_g.data_ptr();
  p.grad_s_in_element_type = grad_s.scalar_type() != at::kFloat;
  p.grad_g_in_element_type = grad_g.scalar_type() != at::kFloat;
  p.grad_initial_state_k = float_pointer(grad_initial_k);
  p.grad_initial_state_v = float_pointer(grad_initial_v);
  p.grad_probabilities = grad_probabilities.data_ptr<float>();
  p.grad_probabilities_intra = grad_probabilities_intra.data_ptr<float>();
  p.grad_slot_write_intra = grad_slot_write_intra.data_ptr<float>();
  p.value_score_diagonal = value_score_diagonal.data_ptr<float>();
  p.grad_slot_write = grad_slot_write.data_ptr<float>();
  p.grad_slot_write_diagonal = grad_slot_write_diagonal.data_ptr<float>();
  p.grad_slot_scores = grad_slot_scores.data_ptr();
  p.grad_key_scores = grad_key_scores.data_ptr();
  p.decayed_grad_score_blocks = decayed_grad_score_blocks.data_ptr();
  p.gate_terms = gate_terms.data_ptr<float>();
  p.gate_final = gate_final.data_ptr<float>();
  p.chunk_totals = chunk_totals.data_ptr<float>();
  C10_CUDA_CHECK(cuda::gsa_chunk_backward(p, c10::cuda::getCurrentCUDAStream().stream()));
  auto as_input_dtype = [](const at::Tensor& grad, const at::Tensor& input) {
    return grad.defined() ? grad.to(input.scalar_type()) : grad;
  };
  return {grad_q.view(q.sizes()),
          grad_k.view(k.sizes()),
          grad_v.view(v.sizes()),
          as_input_dtype(grad_s, s),
          as_input_dtype(grad_g, g),
          as_input_dtype(grad_initial_k, initial_state_k),
          as_input_dtype(grad_initial_v, initial_state_v)};
}

Tensors7 gsa_chunk_bwd_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& s, const at::Tensor& g, double scale,
                            const OptionalTensor& initial_state_k, const OptionalTensor& initial_state_v,
                            const OptionalTensor& cu_seqlens, const at::Tensor& grad_o,
                            const OptionalTensor& grad_final_state_k,
                            const OptionalTensor& grad_final_state_v) {
  return chunk_backward(q, k, v, s, g, scale, initial_state_k, initial_state_v, cu_seqlens, grad_o,
                        grad_final_state_k, grad_final_state_v, {});
}

Tensors7 gsa_chunk_bwd_with_internals_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const OptionalTensor& initial_state_k,
    const OptionalTensor& initial_state_v, const OptionalTensor& cu_seqlens, const at::Tensor& grad_o,
    const OptionalTensor& grad_final_state_k, const OptionalTensor& grad_final_state_v,
    at::TensorList internals) {
  return chunk_backward(q, k, v, s, g, scale, initial_state_k, initial_state_v, cu_seqlens, grad_o,
                        grad_final_state_k, grad_final_state_v, internals.vec());
}

// One decoding step through the token-by-token kernels. The states are updated in place when
// they are fp32, contiguous and aligned (the in-place op requires that, else general path).
// With `rows` (int64 [B] on the device), sequence b's states are row rows[b] of the states.
at::Tensor step_states(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& s, const at::Tensor& g, double scale,
                       const at::Tensor& state_k_in, const at::Tensor& state_v_in,
                       at::Tensor& state_k_out, at::Tensor& state_v_out, const at::Tensor& rows = {}) {
  // As a chunked problem with T = 1: [B, HQ, D] -> [B, 1, HQ, D].
  const at::Tensor q4 = q.unsqueeze(1), k4 = k.unsqueeze(1), v4 = v.unsqueeze(1);
  const at::Tensor s4 = s.unsqueeze(1), g4 = g.unsqueeze(1);
  const Problem problem(q4, k4, v4, s4, at::Tensor());
  const c10::cuda::CUDAGuard device_guard(q.device());
  // bf16 states (a server's --state-dtype bfloat16) are read and written as they are stored.
  const bool stored_bf16 = state_k_out.scalar_type() == at::kBFloat16;
  const KernelInputs in = prepare_inputs(q4, k4, v4, s4, g4, stored_bf16 ? at::Tensor() : state_k_in,
                                         stored_bf16 ? at::Tensor() : state_v_in, at::Tensor(), problem);
  cuda::GsaParams p = make_params(problem, in, scale);
  if (stored_bf16) {
    p.bfloat16_states = true;
    p.initial_state_k = static_cast<const float*>(state_k_in.data_ptr());  // bf16 elements (GsaParams::bfloat16_states)
    p.initial_state_v = static_cast<const float*>(state_v_in.data_ptr());
  }
  at::Tensor o = at::empty({problem.batch, problem.query_heads, problem.value_dim}, q.options());
  p.o = o.data_ptr();
  p.final_state_k = static_cast<float*>(state_k_out.data_ptr());
  p.final_state_v = static_cast<float*>(state_v_out.data_ptr());
  if (rows.defined()) {
    p.state_rows = rows.data_ptr<int64_t>();
    p.state_row_count = state_k_out.size(0);
  }
  run_recurrent(problem, p, q.options(), c10::cuda::getCurrentCUDAStream().stream());
  return o;
}

bool step_fits(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s) {
  const Problem problem(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), s.unsqueeze(1), at::Tensor());
  return problem.fused_kernels_fit(q.device(), /*chunked=*/false);
}

bool kernel_ready_state(const at::Tensor& state) {
  return state.scalar_type() == at::kFloat && state.is_contiguous() &&
         reinterpret_cast<uintptr_t>(state.data_ptr()) % 16 == 0;
}

Tensors3 gsa_step_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& s, const at::Tensor& g, double scale,
                       const at::Tensor& state_k, const at::Tensor& state_v) {
  gsa_step_check_inputs("lintime::gsa_step", q, k, v, s, g, state_k, state_v);
  if (!step_fits(q, k, v, s) || state_k.scalar_type() == at::kDouble) {
    return gsa_step_functional(q, k, v, s, g, scale, state_k, state_v);
  }
  at::Tensor new_state_k = at::empty(state_k.sizes(), state_k.options().dtype(at::kFloat));
  at::Tensor new_state_v = at::empty(state_v.sizes(), state_v.options().dtype(at::kFloat));
  at::Tensor o = step_states(q, k, v, s, g, scale, state_k, state_v, new_state_k, new_state_v);
  return {o, new_state_k, new_state_v};
}

at::Tensor gsa_step_inplace_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& s, const at::Tensor& g, double scale,
                                 at::Tensor& state_k, at::Tensor& state_v) {
  gsa_step_check_inputs("lintime::gsa_step_", q, k, v, s, g, state_k, state_v);
  if (!step_fits(q, k, v, s) || !kernel_ready_state(state_k) || !kernel_ready_state(state_v)) {
    return gsa_step_inplace(q, k, v, s, g, scale, state_k, state_v);
  }
  return step_states(q, k, v, s, g, scale, state_k, state_v, state_k, state_v);
}

at::Tensor gsa_step_rows_inplace_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& s, const at::Tensor& g, double scale,
                                      at::Tensor& state_k, at::Tensor& state_v, const at::Tensor& rows) {
  gsa_step_rows_check_inputs("lintime::gsa_step_rows_", q, k, v, s, g, state_k, state_v, rows);
  // fp32 states, or bf16 ones (read and written in bf16, computed in fp32).
  const auto stored_ready = [&](const at::Tensor& state) {
    return state.scalar_type() == state_k.scalar_type() && state.is_contiguous() &&
           (state.scalar_type() == at::kFloat || state.scalar_type() == at::kBFloat16) &&
           reinterpret_cast<uintptr_t>(state.data_ptr()) % 16 == 0;
  };
  if (!step_fits(q, k, v, s) || !stored_ready(state_k) || !stored_ready(state_v) ||
      compute_dtype(q.scalar_type()) != at::kFloat || state_k.size(0) >= (int64_t{1} << 31)) {
    return gsa_step_rows_inplace(q, k, v, s, g, scale, state_k, state_v, rows);
  }
  return step_states(q, k, v, s, g, scale, state_k, state_v, state_k, state_v, rows.contiguous());
}

}  // namespace

std::vector<int64_t> gsa_fused_internals_layout(at::IntArrayRef sizes, at::ScalarType dtype, const at::Device& device) {
  TORCH_CHECK(sizes.size() == 9, "lintime::gsa_chunk_internals_layout: sizes must be [B, T, HQ, H, K, V, M, N, varlen], got ",
              sizes.size(), " values");
  if (!device.is_cuda()) return {};
  const at::Device where = device.has_index() ? device : at::Device(at::kCUDA, c10::cuda::current_device());
  const Problem problem(sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7], sizes[8] != 0,
                        dtype);
  // chunk_forward keeps internals only on its chunked fused path.
  if (problem.short_sequences() || !problem.fused_kernels_fit(where, /*chunked=*/true)) return {};
  std::vector<int64_t> layout;
  for (const InternalShape& internal : internal_shapes(problem)) {
    layout.push_back(static_cast<int64_t>(internal.shape.size()));
    layout.insert(layout.end(), internal.shape.begin(), internal.shape.end());
    layout.push_back(internal.float32 ? 0 : 1);
  }
  return layout;
}

TORCH_LIBRARY_IMPL(lintime, CUDA, m) {
  m.impl("gsa_chunk", gsa_chunk_cuda);
  m.impl("gsa_chunk_bwd", gsa_chunk_bwd_cuda);
  m.impl("gsa_chunk_with_internals", gsa_chunk_with_internals_cuda);
  m.impl("gsa_chunk_bwd_with_internals", gsa_chunk_bwd_with_internals_cuda);
  m.impl("gsa_step", gsa_step_cuda);
  m.impl("gsa_step_", gsa_step_inplace_cuda);
  m.impl("gsa_step_rows_", gsa_step_rows_inplace_cuda);
}

}  // namespace lintime::ops

#endif  // LINTIME_WITH_CUDA
