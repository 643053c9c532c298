// The architecture registry's build and save: for every registered model type (GSA and its
// hybrid, GLA, Llama, Mistral, BASED) a model built from a config.json with random weights
// (deterministic per seed) is saved as a folder that load_causal_lm reads back to the same
// logits, with the config.json it was built from; a model without one is refused by save.
#include "core/error.h"
#include "io/model_folder.h"
#include "models/architecture.h"
#include "models/gla_config.h"
#include "models/gsa_model.h"
#include "models/llama_config.h"
#include "support/based_configs.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace {

using lintime::testing::error_of;
using lintime::testing::make_generator;

std::vector<std::pair<std::string, nlohmann::json>> configs() {
  lintime::models::GsaConfig gsa;
  gsa.vocab_size = 40;
  gsa.hidden_size = 32;
  gsa.num_hidden_layers = 2;
  gsa.num_slots = 8;
  lintime::models::GsaConfig hybrid = gsa;
  hybrid.attn = nlohmann::json{{"layers", {0}}, {"num_heads", 4}, {"qkv_bias", true}};
  lintime::models::GlaConfig gla;
  gla.vocab_size = 40;
  gla.hidden_size = 32;
  gla.num_hidden_layers = 2;
  lintime::models::LlamaConfig llama;
  llama.vocab_size = 40;
  llama.hidden_size = 32;
  llama.intermediate_size = 48;
  llama.num_hidden_layers = 2;
  llama.num_attention_heads = 4;
  llama.num_key_value_heads = 2;
  lintime::models::LlamaConfig mistral = llama;
  mistral.model_type = "mistral";
  mistral.sliding_window = 4;
  return {{"gsa", gsa.to_json()},          {"gsa hybrid", hybrid.to_json()}, {"gla", gla.to_json()},
          {"llama", llama.to_json()},      {"mistral", mistral.to_json()},
          {"based", lintime::testing::tiny_based_config()}};
}

TEST(ArchitectureRegistry, BuildSaveAndLoadEveryModelType) {
  lintime::testing::TempDir dir;
  at::NoGradGuard no_grad;
  for (const auto& [name, config] : configs()) {
    auto model = lintime::models::build_causal_lm(config, 7, name);
    auto again = lintime::models::build_causal_lm(config, 7, name);
    auto other = lintime::models::build_causal_lm(config, 8, name);
    bool same = true, differs = false;
    const auto parameters = model->module().named_parameters();
    const auto parameters_again = again->module().named_parameters();
    const auto parameters_other = other->module().named_parameters();
    for (size_t i = 0; i < parameters.size(); ++i) {
      same = same && at::equal(parameters[i].second, parameters_again[i].second);
      differs = differs || !at::equal(parameters[i].second, parameters_other[i].second);
    }
    EXPECT_TRUE(same) << name << ": the same seed must give the same weights";
    EXPECT_TRUE(differs) << name << ": another seed must give other weights";

    const std::string folder = dir.file(name);
    lintime::models::save_causal_lm(*model, folder);
    EXPECT_EQ(lintime::io::read_model_config(folder), config) << name;
    auto loaded = lintime::models::load_causal_lm(folder, at::kFloat, at::kCPU);
    const at::Tensor ids = at::randint(40, {2, 9}, make_generator(3), at::kLong);
    EXPECT_TRUE(at::equal(loaded->forward(ids), model->forward(ids))) << name;
    EXPECT_EQ(loaded->config_json(), config) << name;
  }
}

TEST(ArchitectureRegistry, SaveNeedsTheConfigAndBuildNamesBadOnes) {
  lintime::models::GsaConfig config;
  config.vocab_size = 40;
  config.hidden_size = 32;
  config.num_hidden_layers = 1;
  auto generator = make_generator(1);
  auto bare = lintime::models::as_causal_lm(std::make_unique<lintime::models::GsaModel>(config, generator));
  lintime::testing::TempDir dir;
  EXPECT_EQ(error_of([&] { lintime::models::save_causal_lm(*bare, dir.file("bare")); }),
            "save: the model GSA (fla) was built without a config.json, expected one (load or build it from a config)");
  nlohmann::json bad = config.to_json();
  bad["num_heads"] = 3;
  EXPECT_EQ(error_of([&] { lintime::models::build_causal_lm(bad, 0, "my.json"); }),
            "my.json: config key \"num_heads\": expected a divisor of hidden_size * expand_k = 32, got 3");
  EXPECT_NE(error_of([&] { lintime::models::build_causal_lm({{"model_type", "mamba"}}, 0, "my.json"); })
                .find("'my.json': model_type \"mamba\" cannot be run yet"),
            std::string::npos);
}

// Absurd sizes in a config.json (every registered model type) are refused with one line naming
// the key before anything is allocated, and a model within the bounds that cannot fit in memory
// is refused with how much was asked and how much there is — not an allocator abort (issue 25).
TEST(ArchitectureRegistry, AbsurdSizesAreRefusedBeforeAnythingIsAllocated) {
  struct Case {
    std::string model, key;
    int64_t value;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"gsa", "vocab_size", 1000000000000, "config key \"vocab_size\": expected a positive value of at most 16777216"},
      {"gsa", "vocab_size", int64_t{1} << 32, "config key \"vocab_size\": expected a positive value of at most"},
      {"gsa", "hidden_size", 1000000000, "config key \"hidden_size\": expected a positive value of at most 1048576"},
      {"gsa", "intermediate_size", 1000000000000, "config key \"intermediate_size\": expected a positive value"},
      {"gsa", "num_slots", 1000000000, "config key \"num_slots\": expected a positive value of at most 65536"},
      {"gsa", "num_hidden_layers", 1000000000, "config key \"num_hidden_layers\": expected a positive value of at most 4096"},
      {"gla", "num_heads", 1000000000, "config key \"num_heads\": expected a positive value of at most 65536"},
      {"llama", "intermediate_size", 1000000000000, "config key \"intermediate_size\": expected a positive value"},
      {"llama", "num_hidden_layers", -3, "config key \"num_hidden_layers\": expected a positive value of at most 4096, got -3"},
      {"based", "n_layer", 1000000000, "config key \"n_layer\": expected a positive value of at most 4096"},
      {"based", "n_embd", int64_t{1} << 40, "config key \"n_embd\": expected a positive value of at most 1048576"},
  };
  lintime::testing::TempDir dir;
  for (const Case& c : cases) {
    nlohmann::json config;
    for (const auto& [name, json] : configs()) {
      if (name == c.model) config = json;
    }
    config[c.key] = c.value;
    EXPECT_NE(error_of([&] { lintime::models::build_causal_lm(config, 0, "my.json"); }).find("my.json: " + c.expected),
              std::string::npos)
        << c.model << " " << c.key;
  }
  // Within the bounds, far beyond the machine: 4,000 layers of width 65,536.
  nlohmann::json huge = configs().front().second;
  huge["num_hidden_layers"] = 4000;
  huge["hidden_size"] = 65536;
  huge["intermediate_size"] = 262144;
  const std::string error = error_of([&] { lintime::models::build_causal_lm(huge, 0, "my.json"); });
  EXPECT_NE(error.find("my.json: the model's weights ("), std::string::npos) << error;
  EXPECT_NE(error.find(" PB asked, "), std::string::npos) << error;
  EXPECT_NE(error.find(" available on cpu"), std::string::npos) << error;
}

}  // namespace
