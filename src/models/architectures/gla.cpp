// The "gla" architecture: fla's GLAForCausalLM folders (their parameters carry fla's names).
#include "models/architecture.h"
#include "models/gla_config.h"
#include "models/gla_model.h"
#include "models/hybrid_attention.h"

#include <cstdio>

namespace lintime::models {
namespace {

std::string describe_gla(const nlohmann::json& json) {
  const GlaConfig config = GlaConfig::from_json(json);
  const std::string hybrid = hybrid_attention_summary(config.attn, config.num_hidden_layers, config.hidden_size);
  char text[640];
  std::snprintf(text, sizeof text,
                "model: GLA causal LM (fla model_type gla), hidden %lld, %lld layers%s, %lld heads, key dim %lld, "
                "value dim %lld, vocab %lld\nparameters: %lld\nrecurrent state: %lld bytes per sequence%s\n",
                static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_hidden_layers),
                hybrid.c_str(), static_cast<long long>(config.num_heads), static_cast<long long>(config.key_dim()),
                static_cast<long long>(config.value_dim()), static_cast<long long>(config.vocab_size),
                static_cast<long long>(GlaModel::parameter_count_for(config)),
                static_cast<long long>(GlaModel::state_bytes_per_sequence_for(config)),
                hybrid.empty() ? "" : " (softmax-attention layers counted at 1024 tokens)");
  return text;
}

}  // namespace

Architecture gla_architecture() {
  return {"gla", "\"gla\" (fla's GLAForCausalLM)",
          [](const nlohmann::json& config) { return model_type_of(config) == "gla"; },
          describe_gla,
          [](const nlohmann::json& config, at::ScalarType dtype, const c10::Device& device) {
            return as_causal_lm(allocate_model<GlaModel>(GlaConfig::from_json(config), dtype, device));
          },
          nullptr,
          [](const nlohmann::json& config, uint64_t seed) {
            return as_causal_lm(random_model<GlaModel>(GlaConfig::from_json(config), seed));
          }};
}

}  // namespace lintime::models
