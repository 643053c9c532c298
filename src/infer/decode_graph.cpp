// DecodeGraph (see the header): at::cuda::CUDAGraph around one decode step. Recording happens
// on a side stream after a device synchronisation (the caching allocator and cuBLAS set up
// their per-stream workspaces in the eager step on that same stream, outside the recording);
// replays go to the current stream like any other kernel.
#include "infer/decode_graph.h"

#include "core/error.h"

#include <ATen/ATen.h>

#include <string>

#if LINTIME_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace lintime::infer {

#if LINTIME_WITH_CUDA
struct DecodeGraph::Recording {
  at::cuda::CUDAGraph graph;
  at::Tensor tokens;  // [B] the recorded input
  at::Tensor logits;  // [B, V] the recorded output (in the graph's memory pool)
};
#else
struct DecodeGraph::Recording {};
#endif

DecodeGraph::DecodeGraph() = default;
DecodeGraph::~DecodeGraph() = default;

void DecodeGraph::reset() { recording_.reset(); }

bool DecodeGraph::recorded() const { return recording_ != nullptr; }

bool decode_graphs_compiled() {
#if LINTIME_WITH_CUDA
  return true;
#else
  return false;
#endif
}

at::Tensor DecodeGraph::run(const at::Tensor& tokens, const Step& step, int* step_calls) {
#if LINTIME_WITH_CUDA
  if (tokens.is_cuda()) {
    if (recording_ && recording_->tokens.sizes() == tokens.sizes() &&
        recording_->tokens.scalar_type() == tokens.scalar_type() && recording_->tokens.device() == tokens.device()) {
      recording_->tokens.copy_(tokens);
      recording_->graph.replay();
      if (step_calls) *step_calls = 0;
      return recording_->logits.clone();
    }
    recording_.reset();
    const c10::cuda::CUDAGuard device_guard(tokens.device());
    c10::cuda::device_synchronize();  // the prefill on the current stream is done
    at::Tensor logits;
    auto recording = std::make_unique<Recording>();
    {
      const c10::cuda::CUDAStreamGuard stream_guard(c10::cuda::getStreamFromPool(false, tokens.device().index()));
      logits = step(tokens);  // the real step for these tokens
      recording->tokens = tokens.clone();
      c10::cuda::device_synchronize();
      try {
        recording->graph.capture_begin();
        recording->logits = step(recording->tokens);
        recording->graph.capture_end();
      } catch (const std::exception& error) {
        std::string message = error.what();
        message = message.substr(0, message.find('\n'));  // c10 errors append a backtrace
        lintime::fail("cannot record the decode step as a CUDA graph (run without CUDA graphs): ", message);
      }
    }
    c10::cuda::device_synchronize();
    recording_ = std::move(recording);
    if (step_calls) *step_calls = 2;
    return logits;
  }
#endif
  if (step_calls) *step_calls = 1;
  return step(tokens);
}

}  // namespace lintime::infer
