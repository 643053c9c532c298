// Decoding a CausalLm through the engine's steps: prefill, then one step per token, each step
// replayed as a CUDA graph where the model allows it (decode_graph.h). The model knows nothing
// of graphs; this wrapper records its step after each prefill (which replaces the state
// tensors) and keeps the model's host-side token count right.
#pragma once

#include "infer/decode_graph.h"
#include "models/causal_lm.h"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::infer {

class DecodeSteps {
 public:
  // `cuda_graphs`: replay steps as CUDA graphs when the model's steps allow it, this build has
  // CUDA and the model runs on a GPU (see graphed()).
  DecodeSteps(models::CausalLm& model, bool cuda_graphs);

  // The model's prefill (see CausalLm::prefill); the next step records anew.
  at::Tensor prefill(const at::Tensor& input_ids, int64_t total_tokens = 0);
  // The model's step, replayed from a recording when graphed.
  at::Tensor step(const at::Tensor& tokens);

  // Whether steps on a GPU are replayed as CUDA graphs.
  bool graphed() const { return graphed_; }
  models::CausalLm& model() { return model_; }

 private:
  models::CausalLm& model_;
  bool graphed_;
  DecodeGraph graph_;
};

}  // namespace lintime::infer
