// Hugging Face's LlamaForCausalLM / MistralForCausalLM, the Transformer++ of the GSA paper, as a
// configuration of the decoder stack (models/decoder.h): embeddings → L blocks
// (x += self_attn(input_layernorm(x)); x += mlp(post_attention_layernorm(x))) → norm → lm_head
// (or the embedding matrix when tied). Attention is grouped-query softmax attention with RoPE
// (the "gqa" mixer, layers/grouped_query_attention.h), the MLP SwiGLU, the norms RMSNorm.
// Decoding keeps a KV cache that grows with the sequence (state/kv_cache.h) — the baseline
// GSA's constant-size state is measured against. Parameter names are Hugging Face's
// ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight").
#pragma once

#include "models/decoder.h"
#include "models/llama_config.h"

#include <ATen/core/Generator.h>
#include <c10/core/ScalarType.h>

#include <cstdint>

namespace lintime::models {

// The decoder of this config (validated).
DecoderConfig llama_decoder_config(const LlamaConfig& config);

class LlamaModel : public Decoder {
 public:
  // Builds the model on the CPU in fp32, weights N(0, initializer_range) drawn from `generator`
  // in registration order, norms 1 (Hugging Face's init). Move it with to(device, dtype).
  LlamaModel(const LlamaConfig& config, at::Generator& generator);

  const LlamaConfig& config() const { return config_; }

  static int64_t parameter_count_for(const LlamaConfig& config);
  // Bytes of keys and values one token adds to the cache, all layers, in `dtype`.
  static int64_t kv_bytes_per_token_for(const LlamaConfig& config, at::ScalarType dtype);

 private:
  LlamaConfig config_;
};

}  // namespace lintime::models
