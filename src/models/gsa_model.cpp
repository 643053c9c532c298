// GSA causal LM: its decoder configuration.
#include "models/gsa_model.h"

#include "models/fla_config_fields.h"

namespace lintime::models {

layers::GatedSlotAttentionOptions gsa_attention_options(const GsaConfig& config) {
  layers::GatedSlotAttentionOptions options;
  options.hidden_size = config.hidden_size;
  options.num_heads = config.num_heads;
  options.num_kv_heads = config.num_kv_heads;
  options.num_slots = config.resolved_num_slots();
  options.expand_k = config.expand_k;
  options.expand_v = config.expand_v;
  options.gate_logit_normalizer = config.gate_logit_normalizer;
  options.feature_map = config.feature_map;
  options.use_short_conv = config.use_short_conv;
  options.conv_size = config.conv_size;
  options.elementwise_affine = config.elementwise_affine;
  options.norm_eps = 1e-5;
  options.scale = std::nullopt;
  options.initializer_range = config.initializer_range;
  return options;
}

DecoderConfig gsa_decoder_config(const GsaConfig& config) {
  config.validate();
  const layers::GatedSlotAttentionOptions gsa = gsa_attention_options(config);
  nlohmann::json options = {{"num_heads", gsa.num_heads},
                            {"num_slots", gsa.num_slots},
                            {"expand_k", gsa.expand_k},
                            {"expand_v", gsa.expand_v},
                            {"gate_logit_normalizer", gsa.gate_logit_normalizer},
                            {"scale", 1.0},  // fla's GSA layer does not scale q
                            {"feature_map", gsa.feature_map},
                            {"use_short_conv", gsa.use_short_conv},
                            {"conv_size", gsa.conv_size},
                            {"elementwise_affine", gsa.elementwise_affine},
                            {"norm_eps", gsa.norm_eps}};
  if (gsa.num_kv_heads) options["num_kv_heads"] = *gsa.num_kv_heads;
  return fla_decoder_config(config, "GSA (fla)", MixerSpec{"gsa", options});
}

GsaModel::GsaModel(const GsaConfig& config, at::Generator& generator)
    : Decoder(gsa_decoder_config(config), generator), config_(config) {}

int64_t GsaModel::parameter_count_for(const GsaConfig& config) {
  return Decoder::parameter_count_for(gsa_decoder_config(config));
}

int64_t GsaModel::state_bytes_per_sequence_for(const GsaConfig& config) {
  return Decoder::state_bytes_per_sequence_for(gsa_decoder_config(config));
}

}  // namespace lintime::models
