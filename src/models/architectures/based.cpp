// The "based" architecture: HazyResearch's BASED folders. Their config.json is a GPT-2 config
// (model_type "gpt2") with the mixer objects alt_mixer / alt_mixer_layers, which identify it;
// lintime's parameters carry HazyResearch's names ("transformer.…", "lm_head.weight").
#include "models/architecture.h"
#include "models/based_config.h"
#include "models/based_model.h"

#include <cstdio>

namespace lintime::models {
namespace {

bool is_based(const nlohmann::json& config) {
  return config.is_object() && (config.contains("alt_mixer") || config.contains("alt_mixer_layers"));
}

std::string describe_based(const nlohmann::json& json) {
  const BasedConfig config = BasedConfig::from_json(json);
  int64_t counts[3] = {0, 0, 0};
  for (int64_t layer = 0; layer < config.num_layers; ++layer) ++counts[static_cast<int>(config.mixer_of(layer))];
  char text[640];
  std::snprintf(text, sizeof text,
                "model: BASED LM (based.md §4), d %lld, %lld layers (%lld short conv, %lld Taylor linear attention "
                "d' %lld, %lld sliding window of %lld keys), vocab %lld\nparameters: %lld\n"
                "recurrent state: %lld bytes per sequence\n",
                static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_layers),
                static_cast<long long>(counts[0]), static_cast<long long>(counts[1]),
                static_cast<long long>(config.feature_dim), static_cast<long long>(counts[2]),
                static_cast<long long>(config.window), static_cast<long long>(config.padded_vocab_size()),
                static_cast<long long>(BasedModel::parameter_count_for(config)),
                static_cast<long long>(BasedModel::state_bytes_per_sequence_for(config)));
  return text;
}

}  // namespace

Architecture based_architecture() {
  return {"based", "HazyResearch's BASED (a GPT-2 config with \"alt_mixer\")", is_based, describe_based,
          [](const nlohmann::json& config, at::ScalarType dtype, const c10::Device& device) {
            return as_causal_lm(allocate_model<BasedModel>(BasedConfig::from_json(config), dtype, device));
          },
          nullptr,
          [](const nlohmann::json& config, uint64_t seed) {
            return as_causal_lm(random_model<BasedModel>(BasedConfig::from_json(config), seed));
          }};
}

}  // namespace lintime::models
