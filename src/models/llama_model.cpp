// Llama / Mistral causal LM: its decoder configuration and KV-cache size.
#include "models/llama_model.h"

namespace lintime::models {

DecoderConfig llama_decoder_config(const LlamaConfig& config) {
  config.validate();
  nlohmann::json attention = {{"num_heads", config.num_attention_heads},
                              {"num_kv_heads", config.resolved_num_key_value_heads()},
                              {"head_dim", config.resolved_head_dim()},
                              {"bias", config.attention_bias},
                              {"rope_theta", config.rope.rope_theta},
                              {"rope_type", config.rope.rope_type},
                              {"rope_factor", config.rope.factor},
                              {"low_freq_factor", config.rope.low_freq_factor},
                              {"high_freq_factor", config.rope.high_freq_factor},
                              {"original_max_position_embeddings", config.rope.original_max_position_embeddings}};
  if (config.sliding_window) attention["sliding_window"] = *config.sliding_window;
  DecoderConfig result;
  result.description = config.model_type == "mistral" ? "Mistral (Hugging Face)" : "Llama (Hugging Face)";
  result.vocab_size = config.vocab_size;
  result.hidden_size = config.hidden_size;
  result.layers.assign(static_cast<size_t>(config.num_hidden_layers), MixerSpec{"gqa", attention});
  result.intermediate_size = config.intermediate_size;
  result.mlp_bias = config.mlp_bias;
  result.norm_eps = config.rms_norm_eps;
  result.initializer_range = config.initializer_range;
  result.tie_word_embeddings = config.tie_word_embeddings;
  result.names = DecoderNames::hugging_face();
  return result;
}

LlamaModel::LlamaModel(const LlamaConfig& config, at::Generator& generator)
    : Decoder(llama_decoder_config(config), generator), config_(config) {}

int64_t LlamaModel::parameter_count_for(const LlamaConfig& config) {
  return Decoder::parameter_count_for(llama_decoder_config(config));
}

int64_t LlamaModel::kv_bytes_per_token_for(const LlamaConfig& config, at::ScalarType dtype) {
  config.validate();
  return config.num_hidden_layers * 2 * config.resolved_num_key_value_heads() * config.resolved_head_dim() *
         static_cast<int64_t>(c10::elementSize(dtype));
}

}  // namespace lintime::models
