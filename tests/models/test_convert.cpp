// Transformer-to-linear conversion (models/convert.h) on the tiny Llama and Mistral parity
// fixtures (tests/fixtures/hf_parity): every copied tensor equals its source bit for bit, the new
// parameters follow fla's initialiser, the config reads back with the intended values and GSA
// keeps grouped heads; the converted model's prefill + decode equals its forward and a few
// gradient steps lower its loss on a fixed batch; bad sources and outputs are one line.
#include "support/test_support.h"

#include "io/safetensors.h"
#include "models/architecture.h"
#include "models/causal_lm.h"
#include "models/convert.h"
#include "models/gla_config.h"
#include "models/gsa_config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;

fs::path fixture(const std::string& name) {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  return fs::path(source ? source : ".") / "tests" / "fixtures" / "hf_parity" / name;
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

struct Case {
  std::string source, to;
};

class ConvertDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lintime-convert-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

class Convert : public ConvertDir, public ::testing::WithParamInterface<Case> {};

TEST_P(Convert, CopiesTheSourceBitForBitAndInitialisesTheRest) {
  const Case c = GetParam();
  lintime::models::ConvertOptions options;
  options.to = c.to;
  options.seed = 7;
  const auto report = lintime::models::convert_transformer(fixture(c.source).string(), (dir_ / "out").string(), options);
  const auto source = lintime::io::load_safetensors((fixture(c.source) / "model.safetensors").string());
  const auto target = lintime::io::load_safetensors((dir_ / "out" / "model.safetensors").string());
  const auto source_config = read_json(fixture(c.source) / "config.json");
  const int64_t heads = source_config.at("num_attention_heads"), kv_heads = source_config.at("num_key_value_heads");
  const int64_t layers = source_config.at("num_hidden_layers");

  // The documented name map.
  std::map<std::string, std::string> copied = {{"model.embeddings.weight", "model.embed_tokens.weight"},
                                               {"model.norm.weight", "model.norm.weight"}};
  if (source.count("lm_head.weight")) copied["lm_head.weight"] = "lm_head.weight";
  for (int64_t i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    copied[p + "attn_norm.weight"] = p + "input_layernorm.weight";
    copied[p + "mlp_norm.weight"] = p + "post_attention_layernorm.weight";
    for (const char* m : {"gate_proj", "up_proj", "down_proj"}) copied[p + "mlp." + m + ".weight"] = p + "mlp." + m + ".weight";
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"}) copied[p + "attn." + m + ".weight"] = p + "self_attn." + m + ".weight";
  }
  EXPECT_EQ(report.copied_tensors, static_cast<int64_t>(copied.size()));
  for (const auto& [to, from] : copied) {
    ASSERT_TRUE(target.count(to)) << to;
    at::Tensor expected = source.at(from);
    const bool kv = to.find("attn.k_proj") != std::string::npos || to.find("attn.v_proj") != std::string::npos;
    if (c.to == "gla" && kv && heads != kv_heads) {  // lintime's GLA: one state per head, rows repeated
      const int64_t head_dim = expected.size(0) / kv_heads;
      expected = expected.reshape({kv_heads, head_dim, -1}).repeat_interleave(heads / kv_heads, 0).reshape({-1, expected.size(1)});
    }
    EXPECT_TRUE(at::equal(target.at(to), expected)) << to << " differs from " << from;
  }
  // GSA keeps the grouped heads: k_proj has the source's kv_heads rows, not one per query head.
  if (c.to == "gsa") EXPECT_EQ(target.at("model.layers.0.attn.k_proj.weight").sizes(), source.at("model.layers.0.self_attn.k_proj.weight").sizes());

  // New parameters: matrices normal(0, initializer_range), norm gains 1.
  const double range = source_config.value("initializer_range", 0.02);
  int64_t fresh = 0;
  for (const auto& [name, tensor] : target) {
    if (copied.count(name)) continue;
    ++fresh;
    const at::Tensor values = tensor.to(at::kDouble);
    if (tensor.dim() == 1 && name.find("norm") != std::string::npos) {
      EXPECT_TRUE(at::equal(values, at::ones_like(values))) << name;
    } else if (tensor.dim() == 2) {
      const double n = static_cast<double>(values.numel());
      const double mean = values.mean().item<double>(), std = values.std().item<double>();
      // Sampling: the mean within 5 standard errors, the deviation within 5 of its own.
      EXPECT_LE(std::abs(mean), 5 * range / std::sqrt(n)) << name;
      EXPECT_NEAR(std, range, 5 * range / std::sqrt(2 * n)) << name;
    }
  }
  EXPECT_EQ(fresh, report.new_tensors);
  EXPECT_GT(fresh, 0);

  // The config reads back through lintime's own config with the intended values.
  const auto config = read_json(dir_ / "out" / "config.json");
  if (c.to == "gsa") {
    const auto gsa = lintime::models::GsaConfig::from_json(config);
    EXPECT_EQ(gsa.resolved_num_kv_heads(), kv_heads);
    EXPECT_EQ(gsa.resolved_num_slots(), 64);
    EXPECT_EQ(gsa.head_k_dim(), source_config.value("head_dim", int64_t{source_config.at("hidden_size")} / heads));
    EXPECT_EQ(gsa.norm_eps, source_config.at("rms_norm_eps").get<double>());
    EXPECT_EQ(gsa.tie_word_embeddings, source_config.at("tie_word_embeddings").get<bool>());
    EXPECT_EQ(gsa.feature_map, "swish");  // fla's default
  } else {
    const auto gla = lintime::models::GlaConfig::from_json(config);
    EXPECT_FALSE(gla.use_output_gate);  // the paper's adaptation: no output gate, ReLU feature map
    EXPECT_EQ(gla.feature_map.value_or("null"), "relu");
    EXPECT_EQ(gla.norm_eps, source_config.at("rms_norm_eps").get<double>());
  }
}

TEST_P(Convert, TheConvertedModelDecodesAsItsForwardAndLearns) {
  const Case c = GetParam();
  lintime::models::ConvertOptions options;
  options.to = c.to;
  lintime::models::convert_transformer(fixture(c.source).string(), (dir_ / "out").string(), options);
  auto model = lintime::models::load_causal_lm((dir_ / "out").string(), at::kDouble, c10::Device(c10::kCPU));
  const at::Tensor ids = at::randint(0, 256, {2, 12}, at::TensorOptions().dtype(at::kLong));
  {
    at::NoGradGuard no_grad;
    const at::Tensor full = model->forward(ids);
    std::vector<at::Tensor> steps = {model->prefill(ids.slice(1, 0, 7), 12)};  // the last position's logits
    for (int64_t t = 7; t < 12; ++t) steps.push_back(model->step(ids.select(1, t)));
    const at::Tensor decoded = at::stack(steps, 1);  // positions 6 .. 11
    EXPECT_LE((decoded - full.slice(1, 6, 12)).abs().max().item<double>(), 1e-12 * full.abs().max().item<double>());
  }
  // Gradient steps on a fixed batch lower its loss.
  auto loss_of = [&] {
    const at::Tensor logits = model->forward(ids.slice(1, 0, 11));
    return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), ids.slice(1, 1, 12).reshape({-1}));
  };
  for (auto& [name, parameter] : model->module().named_parameters()) parameter.requires_grad_(true);
  const double before = loss_of().item<double>();
  for (int step = 0; step < 5; ++step) {
    at::Tensor loss = loss_of();
    loss.backward();
    at::NoGradGuard no_grad;
    for (auto& [name, parameter] : model->module().named_parameters()) {
      parameter.sub_(parameter.grad() * 0.05);
      parameter.mutable_grad() = at::Tensor();
    }
  }
  const double after = loss_of().item<double>();
  std::printf("%s -> %s: fixed-batch loss %.4f -> %.4f after 5 steps\n", c.source.c_str(), c.to.c_str(), before, after);
  EXPECT_LT(after, before - 0.05);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Convert,
                         ::testing::Values(Case{"llama", "gsa"}, Case{"llama", "gla"}, Case{"mistral", "gsa"},
                                           Case{"mistral", "gla"}),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.source + "_to_" + info.param.to; });

class ConvertErrors : public ConvertDir {};

TEST_F(ConvertErrors, BadSourcesAndOutputsAreOneLineAndLeaveNothing) {
  lintime::models::ConvertOptions options;
  const std::string out = (dir_ / "out").string();
  const auto convert = [&](const fs::path& source, const lintime::models::ConvertOptions& o) {
    return error_of([&] { lintime::models::convert_transformer(source.string(), out, o); });
  };
  // Not a Llama/Mistral folder.
  const fs::path gsa = fixture("../fla_parity/gsa");
  EXPECT_EQ(convert(gsa, options), "convert: '" + gsa.string() + "' holds a model_type \"gsa\" model; convert reads "
                                   "Llama and Mistral folders (model_type \"llama\" or \"mistral\")");
  // Head sizes fla's Attention cannot take (Mistral's heads are 24 wide, hidden 64 / 4 heads = 16).
  lintime::models::ConvertOptions hybrid = options;
  hybrid.softmax_layers = {1};
  EXPECT_EQ(convert(fixture("mistral"), hybrid), "--softmax-layers: fla's Attention uses heads of hidden_size / "
                                                  "num_heads = 16 columns, the source's are 24 wide");
  EXPECT_FALSE(fs::exists(out));
  // A feature map the target does not take.
  lintime::models::ConvertOptions gsa_none = options;
  gsa_none.feature_map = "none";
  EXPECT_EQ(convert(fixture("llama"), gsa_none), "--feature-map: GSA takes swish or relu, got \"none\"");
  EXPECT_FALSE(fs::exists(out));

  // A missing and a mis-shaped tensor.
  const fs::path broken = dir_ / "broken";
  fs::create_directories(broken);
  fs::copy_file(fixture("llama") / "config.json", broken / "config.json");
  auto tensors = lintime::io::load_safetensors((fixture("llama") / "model.safetensors").string());
  tensors.erase("model.layers.1.mlp.up_proj.weight");
  lintime::io::save_safetensors((broken / "model.safetensors").string(), {tensors.begin(), tensors.end()});
  EXPECT_EQ(convert(broken, options), "convert: the source has no tensor 'model.layers.1.mlp.up_proj.weight' (for the "
                                      "target's 'model.layers.1.mlp.up_proj.weight')");
  tensors["model.layers.1.mlp.up_proj.weight"] = at::zeros({3, 64});
  lintime::io::save_safetensors((broken / "model.safetensors").string(), {tensors.begin(), tensors.end()});
  EXPECT_NE(convert(broken, options).find("convert: tensor 'model.layers.1.mlp.up_proj.weight' has shape [3, 64]"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));

  // An existing output folder, complete or partial (an interrupted run's), needs --force.
  lintime::models::convert_transformer(fixture("llama").string(), out, options);
  EXPECT_EQ(convert(fixture("llama"), options), "convert: '" + out + "' exists; pass --force to replace it");
  fs::remove(fs::path(out) / "model.safetensors");
  EXPECT_EQ(convert(fixture("llama"), options),
            "convert: '" + out + "' exists and holds no complete model folder; pass --force to replace it");
  fs::create_directories(out + ".tmp");  // left by a killed run: cleared
  lintime::models::ConvertOptions forced = options;
  forced.force = true;
  EXPECT_EQ(convert(fixture("llama"), forced), "");
  EXPECT_TRUE(fs::exists(fs::path(out) / "model.safetensors"));
  EXPECT_FALSE(fs::exists(out + ".tmp"));

  // --force never deletes the source: OUT_DIR may not be SRC_DIR or a folder holding it.
  const fs::path parent = dir_ / "p", source = parent / "src";
  fs::create_directories(parent);
  fs::copy(fixture("llama"), source);
  for (const fs::path& target : {source, fs::path(source.string() + "/"), parent, parent / ".." / "p"}) {
    EXPECT_EQ(error_of([&] { lintime::models::convert_transformer(source.string(), target.string(), forced); }),
              "convert: OUT_DIR '" + target.string() + "' is SRC_DIR '" + source.string() +
                  "' or a folder holding it; give a new folder");
    EXPECT_TRUE(fs::exists(source / "model.safetensors")) << target;
  }
  EXPECT_EQ(error_of([&] { lintime::models::convert_transformer(source.string(), "", forced); }),
            "convert: OUT_DIR must name a new folder, got ''");
  EXPECT_FALSE(fs::exists(".tmp"));
}

}  // namespace
