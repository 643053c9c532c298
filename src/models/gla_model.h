// fla's GLAForCausalLM as a configuration of the decoder stack (models/decoder.h): embeddings →
// L blocks (x += attn(attn_norm(x)); x += mlp(mlp_norm(x))) → norm → lm_head (or the embedding
// matrix when tied), every attn fla's GatedLinearAttention (layers/gated_linear_attention.h,
// key dim d·expand_k, low-rank key gates, per-head RMSNorm with a swish output gate) except the
// layers fla's hybrid "attn" makes softmax attention. Parameter names are fla's
// ("model.layers.0.attn.gk_proj.0.weight", "model.layers.0.attn.g_norm_swish_gate.weight").
#pragma once

#include "models/decoder.h"
#include "models/gla_config.h"

#include <ATen/core/Generator.h>

#include <cstdint>

namespace lintime::models {

// The decoder of this config (validated).
DecoderConfig gla_decoder_config(const GlaConfig& config);

class GlaModel : public Decoder {
 public:
  // Builds the model on the CPU in fp32, weights N(0, initializer_range) drawn from
  // `generator` in registration order, norms 1. Move it with to(device, dtype).
  GlaModel(const GlaConfig& config, at::Generator& generator);

  const GlaConfig& config() const { return config_; }

  static int64_t parameter_count_for(const GlaConfig& config);
  // fp32 recurrent state bytes per sequence over all layers (hybrid softmax-attention layers
  // counted at 1024 tokens).
  static int64_t state_bytes_per_sequence_for(const GlaConfig& config);

 private:
  GlaConfig config_;
};

}  // namespace lintime::models
