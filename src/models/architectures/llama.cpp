// The "llama" architecture: Hugging Face's Llama and Mistral folders (model_type "llama" or
// "mistral"; lintime's parameters carry Hugging Face's names).
#include "models/architecture.h"
#include "models/llama_config.h"
#include "models/llama_model.h"

#include <cstdio>

namespace lintime::models {
namespace {

bool is_llama(const nlohmann::json& config) {
  const std::string model_type = model_type_of(config);
  return model_type == "llama" || model_type == "mistral";
}

std::string describe_llama(const nlohmann::json& json) {
  const LlamaConfig config = LlamaConfig::from_json(json);
  const std::string window = config.sliding_window ? ", sliding window " + std::to_string(*config.sliding_window) : "";
  char text[640];
  std::snprintf(text, sizeof text,
                "model: %s causal LM (Hugging Face model_type %s), hidden %lld, %lld layers, %lld heads of %lld "
                "(%lld kv), rope %s theta %g%s, vocab %lld\nparameters: %lld\n"
                "KV cache: %lld bytes per token per sequence (fp32; half in bf16), growing with the sequence%s\n",
                config.model_type == "mistral" ? "Mistral" : "Llama", config.model_type.c_str(),
                static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_hidden_layers),
                static_cast<long long>(config.num_attention_heads), static_cast<long long>(config.resolved_head_dim()),
                static_cast<long long>(config.resolved_num_key_value_heads()), config.rope.rope_type.c_str(),
                config.rope.rope_theta, window.c_str(), static_cast<long long>(config.vocab_size),
                static_cast<long long>(LlamaModel::parameter_count_for(config)),
                static_cast<long long>(LlamaModel::kv_bytes_per_token_for(config, at::kFloat)),
                config.sliding_window ? " up to the window" : "");
  return text;
}

}  // namespace

Architecture llama_architecture() {
  return {"llama", "\"llama\" and \"mistral\" (Hugging Face's LlamaForCausalLM, MistralForCausalLM)", is_llama,
          describe_llama,
          [](const nlohmann::json& config, at::ScalarType dtype, const c10::Device& device) {
            return as_causal_lm(allocate_model<LlamaModel>(LlamaConfig::from_json(config), dtype, device));
          },
          nullptr,
          [](const nlohmann::json& config, uint64_t seed) {
            return as_causal_lm(random_model<LlamaModel>(LlamaConfig::from_json(config), seed));
          }};
}

}  // namespace lintime::models
