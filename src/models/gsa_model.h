// fla's GSAForCausalLM (gsa.md §4) as a configuration of the decoder stack (models/decoder.h):
// embeddings → L blocks (x += attn(attn_norm(x)); x += mlp(mlp_norm(x))) → norm → lm_head (or
// the embedding matrix when tied), every attn a GSA layer except those fla's hybrid "attn"
// makes softmax attention. Parameter names are fla's current checkpoint layout
// ("model.layers.0.attn.q_proj.weight", "lm_head.weight").
#pragma once

#include "layers/gated_slot_attention.h"
#include "models/decoder.h"
#include "models/gsa_config.h"

#include <ATen/core/Generator.h>

#include <cstdint>

namespace lintime::models {

// The attention options of one GSA layer of a model with this config. g_norm uses eps 1e-5
// whatever norm_eps says, as current fla does (gsa.md §3).
layers::GatedSlotAttentionOptions gsa_attention_options(const GsaConfig& config);
// The decoder of this config (validated).
DecoderConfig gsa_decoder_config(const GsaConfig& config);

class GsaModel : public Decoder {
 public:
  // Builds the model on the CPU in fp32, weights N(0, initializer_range) drawn from
  // `generator` in registration order, norms 1. Move it with to(device, dtype).
  GsaModel(const GsaConfig& config, at::Generator& generator);

  const GsaConfig& config() const { return config_; }

  // Without building weights.
  static int64_t parameter_count_for(const GsaConfig& config);
  // fp32 recurrent state (and conv history) bytes per sequence over all layers (hybrid
  // softmax-attention layers counted at 1024 tokens).
  static int64_t state_bytes_per_sequence_for(const GsaConfig& config);

 private:
  GsaConfig config_;
};

}  // namespace lintime::models
