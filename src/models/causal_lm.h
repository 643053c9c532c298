// One interface over lintime's causal language models for the commands that run model folders
// (forward, generate, perplexity): the full forward, and decoding from a recurrent state that
// the wrapper keeps (prefill, then one token per step).
#pragma once

#include "models/based_model.h"
#include "models/gsa_model.h"

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

namespace lintime::models {

class CausalLm {
 public:
  virtual ~CausalLm() = default;
  // input_ids [B, T] int64 -> logits [B, T, logits_width()] (fp32; fp64 for an fp64 model).
  virtual at::Tensor forward(const at::Tensor& input_ids) = 0;
  // Starts decoding B sequences from the prompt [B, T]: a fresh state; returns its logits [B, T, V].
  virtual at::Tensor prefill(const at::Tensor& input_ids) = 0;
  // One token per sequence [B] -> logits [B, V]; advances the state.
  virtual at::Tensor step(const at::Tensor& tokens) = 0;
  // Logit columns (a padded vocabulary may exceed the tokenizer's).
  virtual int64_t logits_width() const = 0;
  // Token ids the embedding accepts.
  virtual int64_t vocab_size() const = 0;
  virtual int64_t state_bytes_per_sequence() const = 0;
  virtual std::string name() const = 0;
};

std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<GsaModel> model);
std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<BasedModel> model);

}  // namespace lintime::models
