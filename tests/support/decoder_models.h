// Small float64 models of every decoder architecture with weights at trained magnitudes, for
// tests that run each one the same way: GSA (short convolutions), its hybrid with a windowed
// softmax-attention layer, GLA, BASED (convolution, Taylor linear attention, sliding window),
// Llama and Mistral. Header-only: only the tests that include it link the models.
#pragma once

#include "models/based_model.h"
#include "models/gla_model.h"
#include "models/gsa_model.h"
#include "models/llama_model.h"
#include "support/based_configs.h"
#include "support/test_support.h"
#include "support/trained_magnitudes.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lintime::testing {

constexpr int64_t kDecoderTestVocab = 40;  // the tiny BASED model's

template <class Model, class Config>
std::unique_ptr<models::Decoder> trained_like(const Config& config, uint64_t seed) {
  auto generator = make_generator(seed);
  auto model = std::make_unique<Model>(config, generator);
  set_trained_magnitudes(*model, generator);
  model->to(at::kCPU, at::kDouble);
  return model;
}

using DecoderFactory = std::function<std::unique_ptr<models::Decoder>()>;

inline std::vector<std::pair<std::string, DecoderFactory>> decoder_test_models() {
  auto gsa = [](bool hybrid) {
    models::GsaConfig config;
    config.vocab_size = kDecoderTestVocab;
    config.hidden_size = 32;
    config.num_hidden_layers = 2;
    config.num_heads = 2;
    config.num_slots = 8;
    config.use_short_conv = true;
    if (hybrid) config.attn = nlohmann::json{{"layers", {1}}, {"num_heads", 4}, {"window_size", 4}};
    return trained_like<models::GsaModel>(config, 11);
  };
  auto llama = [](std::optional<int64_t> window) {
    models::LlamaConfig config;
    config.model_type = window ? "mistral" : "llama";
    config.vocab_size = kDecoderTestVocab;
    config.hidden_size = 32;
    config.intermediate_size = 48;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 4;
    config.num_key_value_heads = 2;
    config.sliding_window = window;
    return trained_like<models::LlamaModel>(config, 12);
  };
  return {{"gsa", [=] { return gsa(false); }},
          {"gsa hybrid", [=] { return gsa(true); }},
          {"gla",
           [] {
             models::GlaConfig config;
             config.vocab_size = kDecoderTestVocab;
             config.hidden_size = 32;
             config.num_hidden_layers = 2;
             config.num_heads = 2;
             return trained_like<models::GlaModel>(config, 13);
           }},
          {"based",  // conv, Taylor linear attention and a 5-key sliding window (vocab 40)
           [] { return trained_like<models::BasedModel>(models::BasedConfig::from_json(tiny_based_config()), 14); }},
          {"llama", [=] { return llama(std::nullopt); }},
          {"mistral", [=] { return llama(5); }}};
}

}  // namespace lintime::testing
