// fla GSA checkpoints: a model saved in fla's current layout, rewritten in the legacy layout
// (attn.norm / mlp.norm, fused gate_proj) and sharded, loads back to the same logits; tied
// heads, grouped-query heads and short convolutions; a bad checkpoint is rejected whole with a
// one-line error naming the tensor, and leaves the model untouched.
#include "core/error.h"
#include "io/model_folder.h"
#include "io/model_weights.h"
#include "io/safetensors.h"
#include "models/gsa_checkpoint.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using lintime::models::GsaConfig;
using lintime::models::GsaModel;

using lintime::testing::error_of;

GsaConfig tiny_config(std::optional<int64_t> kv_heads, bool short_conv, bool tied) {
  GsaConfig config;
  config.vocab_size = 61;
  config.hidden_size = 32;
  config.num_hidden_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = kv_heads;
  config.num_slots = 8;
  config.use_short_conv = short_conv;
  config.tie_word_embeddings = tied;
  config.initializer_range = 0.1;
  config.validate();
  return config;
}

// A model at trained-model magnitudes: norm gains drawn away from 1.
std::unique_ptr<GsaModel> trained_like(const GsaConfig& config, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto model = std::make_unique<GsaModel>(config, generator);
  at::NoGradGuard no_grad;
  model->for_each_parameter([&](const std::string& name, at::Tensor& parameter) {
    if (name.find("norm") != std::string::npos) parameter.uniform_(0.5, 1.5, generator);
  });
  return model;
}

class GsaCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lintime_gsa_checkpoint_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes `tensors` and the model's config.json into a new folder `name`.
  std::string write_folder(const std::string& name, const GsaModel& model,
                           const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
    const fs::path folder = dir_ / name;
    fs::create_directories(folder);
    lintime::io::save_safetensors((folder / "model.safetensors").string(), tensors);
    model.config().save((folder / "config.json").string());
    return folder.string();
  }

  fs::path dir_;
};

at::Tensor logits_of(GsaModel& model, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  return model.forward(ids);
}

TEST_F(GsaCheckpointTest, CurrentLayoutRoundTripsExactly) {
  for (bool tied : {false, true}) {
    for (bool short_conv : {false, true}) {
      auto model = trained_like(tiny_config(2, short_conv, tied), 7);
      const std::string folder = (dir_ / ("m" + std::to_string(tied) + std::to_string(short_conv))).string();
      lintime::io::save_model_folder(model->named_parameters(), model->config().to_json(), folder);
      auto loaded = lintime::models::load_gsa_model(folder);
      const at::Tensor ids = at::randint(61, {2, 13}, at::kLong);
      EXPECT_TRUE(at::equal(logits_of(*model, ids), logits_of(*loaded, ids))) << "tied " << tied << " conv " << short_conv;
      lintime::io::SafetensorsFile file(folder + "/model.safetensors");
      EXPECT_EQ(file.contains("lm_head.weight"), !tied);
      EXPECT_TRUE(file.contains("model.layers.1.attn.g_norm.weight"));
      EXPECT_TRUE(file.contains("model.layers.0.mlp.up_proj.weight"));
    }
  }
}

TEST_F(GsaCheckpointTest, LegacyLayoutLoadsToTheSameModel) {
  auto model = trained_like(tiny_config(std::nullopt, false, false), 3);
  const int64_t intermediate = model->config().resolved_intermediate_size();
  std::vector<std::pair<std::string, at::Tensor>> legacy;
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, tensor] : model->named_parameters()) by_name[name] = tensor;
  for (const auto& [name, tensor] : model->named_parameters()) {
    std::string renamed = name;
    auto replace = [&](const std::string& from, const std::string& to) {
      const size_t at = renamed.find(from);
      if (at != std::string::npos) renamed.replace(at, from.size(), to);
    };
    if (name.find("mlp.up_proj") != std::string::npos) continue;  // fused into gate_proj below
    if (name.find("mlp.gate_proj") != std::string::npos) {
      const std::string up = name.substr(0, name.find("gate_proj")) + "up_proj.weight";
      legacy.emplace_back(name, at::cat({tensor, by_name.at(up)}, 0));  // gate rows first
      continue;
    }
    replace("attn_norm", "attn.norm");
    replace("mlp_norm", "mlp.norm");
    legacy.emplace_back(renamed, tensor);
  }
  auto config_json = model->config().to_json();
  const std::string folder = write_folder("legacy", *model, legacy);
  EXPECT_EQ(lintime::models::detect_gsa_layout(lintime::io::ModelWeights(folder).names()), lintime::models::GsaLayout::legacy);
  EXPECT_EQ(lintime::io::ModelWeights(folder).info("model.layers.0.mlp.gate_proj.weight").shape[0], 2 * intermediate);
  auto loaded = lintime::models::load_gsa_model(folder);
  const at::Tensor ids = at::randint(61, {3, 9}, at::kLong);
  EXPECT_TRUE(at::equal(logits_of(*model, ids), logits_of(*loaded, ids)));
}

TEST_F(GsaCheckpointTest, ShardedCheckpointsAndDtypes) {
  auto model = trained_like(tiny_config(2, false, false), 5);
  const fs::path folder = dir_ / "sharded";
  fs::create_directories(folder);
  std::vector<std::pair<std::string, at::Tensor>> first, second;
  nlohmann::json weight_map;
  for (const auto& [name, tensor] : model->named_parameters()) {
    const bool in_first = name.find("layers.1") == std::string::npos;
    (in_first ? first : second).emplace_back(name, tensor.to(at::kBFloat16));
    weight_map[name] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  lintime::io::save_safetensors((folder / "model-00001-of-00002.safetensors").string(), first);
  lintime::io::save_safetensors((folder / "model-00002-of-00002.safetensors").string(), second);
  std::ofstream(folder / "model.safetensors.index.json") << nlohmann::json{{"metadata", {}}, {"weight_map", weight_map}}.dump();
  model->config().save((folder / "config.json").string());
  auto loaded = lintime::models::load_gsa_model(folder.string(), at::kFloat);
  // The checkpoint holds bf16: the loaded fp32 model equals the original rounded to bf16.
  std::map<std::string, at::Tensor> expected;
  for (const auto& [name, tensor] : model->named_parameters()) expected[name] = tensor.to(at::kBFloat16).to(at::kFloat);
  for (const auto& [name, tensor] : loaded->named_parameters()) {
    EXPECT_EQ(tensor.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(at::equal(tensor, expected.at(name))) << name;
  }
  auto as_bf16 = lintime::models::load_gsa_model(folder.string(), at::kBFloat16);
  EXPECT_EQ(as_bf16->named_parameters().front().second.scalar_type(), at::kBFloat16);
}

TEST_F(GsaCheckpointTest, BadCheckpointsAreRejectedWholeNamingTheTensor) {
  auto model = trained_like(tiny_config(2, false, false), 9);
  auto parameters = model->named_parameters();
  auto without = [&](const std::string& dropped) {
    std::vector<std::pair<std::string, at::Tensor>> kept;
    for (const auto& entry : parameters)
      if (entry.first != dropped) kept.push_back(entry);
    return kept;
  };
  std::string folder = write_folder("missing", *model, without("model.layers.1.attn.f_proj.weight"));
  EXPECT_NE(error_of([&] { lintime::models::load_gsa_model(folder); })
                .find("does not match the model: missing tensors 'model.layers.1.attn.f_proj.weight'"),
            std::string::npos);
  auto extra = parameters;
  extra.emplace_back("model.layers.0.attn.bogus.weight", at::zeros({2}));
  folder = write_folder("unexpected", *model, extra);
  EXPECT_NE(error_of([&] { lintime::models::load_gsa_model(folder); }).find("unexpected tensors 'model.layers.0.attn.bogus.weight'"),
            std::string::npos);
  auto reshaped = parameters;
  for (auto& [name, tensor] : reshaped)
    if (name == "model.norm.weight") tensor = at::ones({33});
  folder = write_folder("shape", *model, reshaped);
  EXPECT_NE(error_of([&] { lintime::models::load_gsa_model(folder); })
                .find("tensor 'model.norm.weight' has shape [33], the model expects [32]"),
            std::string::npos);
  auto integer = parameters;
  for (auto& [name, tensor] : integer)
    if (name == "model.norm.weight") tensor = at::ones({32}, at::kInt);
  folder = write_folder("dtype", *model, integer);
  EXPECT_NE(error_of([&] { lintime::models::load_gsa_model(folder); }).find("tensor 'model.norm.weight' is I32, expected a floating-point"),
            std::string::npos);
  fs::remove(fs::path(folder) / "config.json");
  EXPECT_NE(error_of([&] { lintime::models::load_gsa_model(folder); }).find("config.json"), std::string::npos);
  EXPECT_NE(error_of([&] { lintime::models::load_gsa_model((dir_ / "absent").string()); }).find("does not exist"),
            std::string::npos);

  // A failed load leaves the model's parameters as they were.
  std::map<std::string, at::Tensor> before;
  for (const auto& [name, tensor] : model->named_parameters()) before[name] = tensor.clone();
  lintime::io::ModelWeights reshaped_weights((dir_ / "shape").string());
  EXPECT_NE(error_of([&] {
              lintime::io::load_module_weights(*model, reshaped_weights,
                                               [](const std::string& name, const at::Tensor&) { return lintime::io::WeightSource{name}; });
            }),
            "");
  for (const auto& [name, tensor] : model->named_parameters()) EXPECT_TRUE(at::equal(tensor, before.at(name))) << name;
}

}  // namespace
