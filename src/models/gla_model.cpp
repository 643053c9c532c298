// GLA causal LM: its decoder configuration.
#include "models/gla_model.h"

#include "models/fla_config_fields.h"

namespace lintime::models {

DecoderConfig gla_decoder_config(const GlaConfig& config) {
  config.validate();
  // fla's GLA layer as its language models build it: gate_low_rank_dim 16, gate logits / 16,
  // q scaled by head_k_dim^-0.5 inside the kernel, g_norm's eps the model's norm_eps.
  const nlohmann::json options = {{"num_heads", config.num_heads},
                                  {"expand_k", config.expand_k},
                                  {"expand_v", config.expand_v},
                                  {"gate_low_rank_dim", 16},
                                  {"gate_logit_normalizer", 16.0},
                                  {"use_output_gate", config.use_output_gate},
                                  {"norm_eps", config.norm_eps},
                                  {"norm_name", config.norm_name()},
                                  {"feature_map", config.feature_map ? nlohmann::json(*config.feature_map)
                                                                     : nlohmann::json(nullptr)}};
  return fla_decoder_config(config, "GLA (fla)", MixerSpec{"gla", options});
}

GlaModel::GlaModel(const GlaConfig& config, at::Generator& generator)
    : Decoder(gla_decoder_config(config), generator), config_(config) {}

int64_t GlaModel::parameter_count_for(const GlaConfig& config) {
  return Decoder::parameter_count_for(gla_decoder_config(config));
}

int64_t GlaModel::state_bytes_per_sequence_for(const GlaConfig& config) {
  return Decoder::state_bytes_per_sequence_for(gla_decoder_config(config));
}

}  // namespace lintime::models
