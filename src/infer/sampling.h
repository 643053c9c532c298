// Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
// (nucleus) filtering, from a seeded generator so that a run repeats exactly.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::infer {

struct SamplingOptions {
  bool greedy = false;       // argmax (also when temperature is 0)
  double temperature = 1.0;  // >= 0
  int64_t top_k = 0;         // 0: no top-k filter
  double top_p = 1.0;        // in (0, 1]; 1: no nucleus filter
};

// Throws lintime::Error naming a bad option.
void validate(const SamplingOptions& options);
// Whether the options take the argmax (no draw from a generator).
inline bool is_greedy(const SamplingOptions& options) { return options.greedy || options.temperature == 0; }

// logits [B, V] (any device, floating) -> next token ids [B] int64 on the CPU. Sampling draws
// from `generator` (a CPU generator).
at::Tensor choose_next_tokens(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator);

}  // namespace lintime::infer
