// The decode loop under `lintime generate` (and, later, the server): prefill the prompt, then
// one step per token from the model's decoding state, choosing each token with the sampler,
// stopping a sequence at EOS and the loop when every sequence has stopped or the budget is spent.
#pragma once

#include "infer/sampling.h"
#include "models/causal_lm.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace lintime::infer {

struct GenerateOptions {
  int64_t max_new_tokens = 128;  // >= 1
  SamplingOptions sampling;
  uint64_t seed = 0;             // of the sampler's CPU generator
  std::optional<int64_t> eos;    // a sequence stops at this token (not kept)
  int64_t choices = 0;           // logit columns a token may come from (0: all; a padded vocabulary's extra
                                 // columns, which no tokenizer can decode, are left out this way)
  bool cuda_graphs = false;      // replay decode steps on a GPU as CUDA graphs where the model allows (decode_steps.h)
};

struct GenerateResult {
  std::vector<std::vector<int64_t>> tokens;  // per sequence, EOS left out
  std::vector<bool> finished;                // per sequence: stopped at EOS
  int64_t steps = 0;                         // tokens chosen per sequence (the EOS included)
  double seconds = 0;                        // from the start of the prefill to the last token
  double first_token_seconds = 0;            // from the start of the prefill to the first token
};

// Generates from `prompt` [B, T] int64 (on the model's device) under no_grad. `on_token` runs
// after each step with the result so far (for streaming). Throws lintime::Error for bad options.
GenerateResult generate(models::CausalLm& model, const at::Tensor& prompt, const GenerateOptions& options,
                        const std::function<void(const GenerateResult&)>& on_token = {});

}  // namespace lintime::infer
