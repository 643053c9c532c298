// One decoding step replayed as a CUDA graph. A decode step of a 1.3B model is ~1,000 small
// kernels; launched one by one from the host they cost more time than the GPU needs for them
// (measured in BENCHMARKS.md, "Generation"), so the step is recorded once and replayed.
//
// Only for a step whose device work depends on nothing but its token tensor and state tensors
// updated in place (GSA: ops::gsa_step_ and the conv history's copy_). A model whose step
// reads host-side positions (a KV cache's length) or synchronises cannot be recorded.
//
// Lifecycle: the first run() after reset() runs the step eagerly (the real step for that token)
// on a side stream, then records it; every later run() copies the tokens into the recorded
// input and replays. reset() whenever the state tensors are replaced (prefill) or the batch
// changes. Without CUDA (or for CPU tensors) run() just calls the step.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace lintime::infer {

class DecodeGraph {
 public:
  using Step = std::function<at::Tensor(const at::Tensor& tokens)>;

  DecodeGraph();
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;

  // tokens [B] -> the step's logits [B, V] (a fresh tensor, kept valid across later runs).
  // `step_calls` (when given) receives how often `step` ran on the host for this token: 1
  // eagerly, 2 when recording (the real step, then the recording, which runs no kernel), 0 on
  // replay. Host-side bookkeeping inside `step` (token counters) must be corrected by the caller.
  at::Tensor run(const at::Tensor& tokens, const Step& step, int* step_calls = nullptr);
  // Forgets the recording (the next run() records anew).
  void reset();
  bool recorded() const;

 private:
  struct Recording;
  std::unique_ptr<Recording> recording_;
};

// Whether this build can record CUDA graphs (compiled with CUDA).
bool decode_graphs_compiled();

}  // namespace lintime::infer
