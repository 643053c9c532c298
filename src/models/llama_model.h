// Hugging Face's LlamaForCausalLM / MistralForCausalLM, the Transformer++ of the GSA paper:
// embeddings → L blocks (x += self_attn(input_layernorm(x)); x += mlp(post_attention_layernorm(x)))
// → norm → lm_head (or the embedding matrix when tied). Attention is grouped-query softmax
// attention with RoPE (layers/grouped_query_attention.h), the MLP SwiGLU, the norms RMSNorm.
// Decoding keeps a KV cache that grows with the sequence (state/kv_cache.h) — the baseline
// GSA's constant-size state is measured against. Parameter names are Hugging Face's
// ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight").
#pragma once

#include "layers/grouped_query_attention.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"
#include "layers/rotary.h"
#include "layers/swiglu_mlp.h"
#include "models/llama_config.h"
#include "state/kv_cache.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace lintime::models {

// RoPE inverse frequencies [head_dim / 2] (fp64, CPU) of the settings, as Hugging Face's
// rope_type functions compute them ("default", "linear", "llama3").
at::Tensor rotary_inverse_frequencies(const RopeSettings& rope, int64_t head_dim);

class LlamaBlock : public layers::Module {
 public:
  LlamaBlock(const LlamaConfig& config, std::shared_ptr<const layers::RotaryTable> rotary, at::Generator& generator);

  // x [B, T, d] -> [B, T, d]
  at::Tensor forward(const at::Tensor& x, state::KvLayerCache* cache = nullptr, int64_t reserve = 0) const;

  layers::RMSNorm input_layernorm;
  layers::GroupedQueryAttention self_attn;
  layers::RMSNorm post_attention_layernorm;
  layers::SwiGluMlp mlp;
};

// "model.*": embeddings, blocks and the final norm.
class LlamaBackbone : public layers::Module {
 public:
  LlamaBackbone(const LlamaConfig& config, at::Generator& generator);

  // input_ids [B, T] -> hidden states after the final norm [B, T, d] in the parameter dtype.
  at::Tensor forward(const at::Tensor& input_ids, state::KvCache* cache = nullptr) const;

  layers::Embedding embed_tokens;
  std::vector<std::unique_ptr<LlamaBlock>> layers;
  layers::RMSNorm norm;
};

class LlamaModel : public layers::Module {
 public:
  // Builds the model on the CPU in fp32, weights N(0, initializer_range) drawn from `generator`
  // in registration order, norms 1 (Hugging Face's init). Move it with to(device, dtype).
  LlamaModel(const LlamaConfig& config, at::Generator& generator);

  // input_ids [B, T] int64 -> logits [B, T, vocab] in fp32 (fp64 for an fp64 model). With a
  // cache, continues the cached sequences and appends their keys and values.
  at::Tensor forward(const at::Tensor& input_ids, state::KvCache* cache = nullptr) const;
  at::Tensor hidden_states(const at::Tensor& input_ids, state::KvCache* cache = nullptr) const;
  // h [..., d] -> logits [..., vocab] (fp32, fp64 for an fp64 model).
  at::Tensor logits(const at::Tensor& hidden) const;

  // An empty cache for the model's layers; `reserve` positions are allocated at the first
  // token (0: grow by doubling).
  state::KvCache make_cache(int64_t reserve = 0) const;
  // Runs the prompt [B, T] into the cache (which it empties first); returns the hidden states
  // [B, T, d] after the final norm (logits() of the positions that are wanted).
  at::Tensor prefill(const at::Tensor& input_ids, state::KvCache& cache) const;
  // One token per sequence, token [B] -> logits [B, vocab]; appends to the cache.
  at::Tensor step(const at::Tensor& token, state::KvCache& cache) const;

  const LlamaConfig& config() const { return config_; }

  static int64_t parameter_count_for(const LlamaConfig& config);
  // Bytes of keys and values one token adds to the cache, all layers, in `dtype`.
  static int64_t kv_bytes_per_token_for(const LlamaConfig& config, at::ScalarType dtype);

 private:
  LlamaConfig config_;

 public:
  LlamaBackbone model;
  std::unique_ptr<layers::Linear> lm_head;  // null when tie_word_embeddings
};

}  // namespace lintime::models
