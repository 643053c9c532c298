// One interface over lintime's causal language models for the commands that run model folders
// (forward, generate, perplexity): the full forward, and decoding from a recurrent state that
// the wrapper keeps (prefill, then one token per step).
#pragma once

#include "models/decoder.h"

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <utility>

namespace lintime::models {

class CausalLm {
 public:
  virtual ~CausalLm() = default;
  // input_ids [B, T] int64 -> logits [B, T, logits_width()] (fp32; fp64 for an fp64 model).
  virtual at::Tensor forward(const at::Tensor& input_ids) = 0;
  // Starts decoding B sequences from the prompt [B, T]: a fresh state; returns the logits of
  // the prompt's last position [B, V]. `total_tokens`: the length the sequences will reach
  // (a KV cache allocates it up front; 0: unknown).
  virtual at::Tensor prefill(const at::Tensor& input_ids, int64_t total_tokens = 0) = 0;
  // One token per sequence [B] -> logits [B, V]; advances the state.
  virtual at::Tensor step(const at::Tensor& tokens) = 0;
  // Whether a step's device work depends on nothing but its token tensor and state tensors
  // updated in place, so that it can be recorded once and replayed (infer/decode_graph.h):
  // recurrent states yes, a KV cache's host-side length no.
  virtual bool steps_are_replayable() const { return false; }
  // After steps replayed from a recording, which run no host code, or recorded, which run it
  // twice: corrects the host-side token count by `tokens`.
  virtual void recount_tokens(int64_t tokens) {}
  // Logit columns (a padded vocabulary may exceed the tokenizer's).
  virtual int64_t logits_width() const = 0;
  // Token ids the embedding accepts.
  virtual int64_t vocab_size() const = 0;
  // The decoding state of one sequence after `tokens` tokens, in bytes (constant for GSA and
  // BASED; a KV cache grows with the tokens).
  virtual int64_t state_bytes_per_sequence(int64_t tokens) const = 0;
  // Bytes of the decoding state held now (all sequences; a KV cache counts what it allocated).
  virtual int64_t state_bytes_in_use() const = 0;
  virtual std::string name() const = 0;
  // The model's parameters (to fill them from a checkpoint, or at random for a benchmark).
  virtual layers::Module& module() = 0;
  // The decoder stack itself (training reads its hidden states and head).
  virtual Decoder& decoder() = 0;

  // The config.json the model was made from (null when it was built without one); what
  // save_causal_lm writes beside the weights.
  const nlohmann::json& config_json() const { return config_json_; }
  void set_config_json(nlohmann::json config) { config_json_ = std::move(config); }

  // A prompt of B × T tokens is prefilled at most this many tokens (B × positions, positions a
  // multiple of 64) at a time where the model can continue a prefill (GSA, Llama): activation
  // memory then stays bounded for a large batch. 32K tokens: at batch 128 and d 2048, the MLP's
  // ~1 GiB fits beside a Transformer's 72 GiB KV cache on an 80 GB GPU (the whole prompt's
  // ~9 GiB would not), and chunks of 256 positions keep the matrix products large.
  void set_prefill_tokens_per_chunk(int64_t tokens);
  int64_t prefill_tokens_per_chunk() const { return prefill_tokens_per_chunk_; }

 private:
  int64_t prefill_tokens_per_chunk_ = 32768;
  nlohmann::json config_json_;
};

// Every decoder-stack model (GSA, GLA, their hybrids, Llama, Mistral, BASED).
std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<Decoder> model);

}  // namespace lintime::models
