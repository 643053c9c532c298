// The BASED language model: its decoder configuration.
#include "models/based_model.h"

#include "core/error.h"

#include <cmath>

namespace lintime::models {

DecoderConfig based_decoder_config(const BasedConfig& config) {
  config.validate();
  LINTIME_CHECK(config.qkv_proj_bias == config.out_proj_bias, "BASED config: qkv_proj_bias and out_proj_bias ",
                "must agree (lintime's sliding-window layer has one bias switch), got ", config.qkv_proj_bias, " and ",
                config.out_proj_bias);
  const double out_std = config.initializer_range / std::sqrt(2.0 * static_cast<double>(config.num_layers));
  DecoderConfig result;
  result.description = "BASED (HazyResearch)";
  result.vocab_size = config.padded_vocab_size();
  result.hidden_size = config.hidden_size;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    switch (config.mixer_of(layer)) {
      case BasedMixer::conv:
        result.layers.push_back(
            {"based_conv",
             {{"kernel_size", config.conv_kernel_size}, {"bias", config.conv_bias}, {"out_init_std", out_std}}});
        break;
      case BasedMixer::linear_attention:
        result.layers.push_back({"based",
                                 {{"feature_dim", config.feature_dim},
                                  {"num_heads", config.linear_attention_heads},
                                  {"normalize", true},
                                  {"eps", config.linear_attention_eps},
                                  {"out_init_std", out_std}}});
        break;
      case BasedMixer::sliding_window:
        result.layers.push_back({"sliding_window",
                                 {{"window", config.window},
                                  {"num_heads", config.num_heads},
                                  {"bias", config.qkv_proj_bias},
                                  {"rotary_base", config.rotary ? config.rotary_base : 0.0},
                                  {"out_init_std", out_std}}});
        break;
    }
  }
  result.intermediate_size = config.inner_size;
  result.mlp = "gated";
  result.mlp_fc1_bias = config.mlp_fc1_bias;
  result.mlp_fc2_bias = config.mlp_fc2_bias;
  result.mlp_out_std = out_std;
  result.norm_eps = config.norm_eps;
  result.initializer_range = config.initializer_range;
  result.tie_word_embeddings = config.tie_word_embeddings;
  result.residual_in_fp32 = config.residual_in_fp32;
  result.logits_in_fp32 = true;
  result.names = DecoderNames::hazy_research();
  return result;
}

BasedModel::BasedModel(const BasedConfig& config, at::Generator& generator)
    : Decoder(based_decoder_config(config), generator), config_(config) {}

int64_t BasedModel::parameter_count_for(const BasedConfig& config) {
  return Decoder::parameter_count_for(based_decoder_config(config));
}

int64_t BasedModel::state_bytes_per_sequence_for(const BasedConfig& config) {
  return Decoder::state_bytes_per_sequence_for(based_decoder_config(config));
}

}  // namespace lintime::models
