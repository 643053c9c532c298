// The MQAR model: shapes, deterministic init, parameter and state-size formulas, the mixer
// registry and config errors, and a short overfitting run on one fixed MQAR batch per mixer
// (gradients reach every parameter; any model fits a fixed batch, so recall itself is tested on
// held-out data in tests/train/test_mqar_recall.cpp, with a negative control).
#include "models/mqar_model.h"

#include "core/error.h"
#include "layers/base_conv.h"
#include "layers/based_linear_attention.h"
#include "layers/gated_linear_attention.h"
#include "layers/layer_norm.h"
#include "layers/softmax_attention.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <numeric>
#include <set>
#include <functional>
#include <limits>
#include <random>
#include <string>

namespace {

using lintime::models::MqarModel;
using lintime::models::MqarModelConfig;
using nlohmann::json;

// One intra-op thread for the whole binary: the tensors here are tiny, and on a loaded
// machine (2 cores shared by several builds) spinning worker threads made the GSA overfitting
// run 200x slower (58 s instead of 0.3 s).
class SingleThreadEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};
const auto* const kSingleThread = ::testing::AddGlobalTestEnvironment(new SingleThreadEnvironment);

using lintime::testing::error_of;

MqarModelConfig small_config(std::vector<std::string> layers) {
  MqarModelConfig config;
  config.vocab_size = 64;
  config.d_model = 16;
  config.layers = std::move(layers);
  config.mixer_options = {{"gsa", {{"num_heads", 2}, {"num_slots", 4}}}};
  return config;
}

// One fixed MQAR-style batch (the generator itself lives in lintime_data, which this test does
// not link): context k1 v1 k2 v2, each key queried once after it, the label at the query key.
std::pair<at::Tensor, at::Tensor> fixed_batch(int64_t batch, int64_t length, int64_t pairs, int64_t vocab) {
  std::mt19937_64 rng(7);
  auto inputs = at::zeros({batch, length}, at::kLong);
  auto labels = at::full({batch, length}, -100, at::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> keys(vocab / 2 - 1), values(vocab / 2);
    std::iota(keys.begin(), keys.end(), 1);
    std::iota(values.begin(), values.end(), vocab / 2);
    std::shuffle(keys.begin(), keys.end(), rng);
    std::shuffle(values.begin(), values.end(), rng);
    for (int64_t i = 0; i < pairs; ++i) {
      inputs[b][2 * i] = keys[i];
      inputs[b][2 * i + 1] = values[i];
      const int64_t query = 2 * pairs + 2 * ((i + b) % pairs) + 2 * (b % 2);
      inputs[b][query] = keys[i];
      labels[b][query] = values[i];
    }
  }
  return {inputs, labels};
}

at::Tensor loss_of(const at::Tensor& logits, const at::Tensor& labels) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}), {},
                                at::Reduction::Mean, -100);
}

TEST(MqarModel, ShapesAndDeterministicInit) {
  for (const auto& layers : std::vector<std::vector<std::string>>{{"base_conv", "gla"}, {"gsa", "gsa"}}) {
    const std::string name = layers[0] + "+" + layers[1];
    MqarModel a(small_config(layers), 3), b(small_config(layers), 3), c(small_config(layers), 4);
    auto inputs = at::randint(64, {2, 24}, at::kLong);
    auto logits = a.forward(inputs);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 24, 64})) << name;
    EXPECT_EQ(logits.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(logits.isfinite().all().item<bool>()) << name;
    EXPECT_TRUE(at::equal(logits, b.forward(inputs))) << name;
    EXPECT_FALSE(at::allclose(logits, c.forward(inputs))) << name;
    auto pa = a.named_parameters(), pc = c.named_parameters();
    ASSERT_EQ(pa.size(), pc.size());
    // Causality: changing the last token leaves every earlier position unchanged.
    auto changed = inputs.clone();
    changed[0][23] = (changed[0][23].item<int64_t>() + 1) % 64;
    auto other = a.forward(changed);
    EXPECT_TRUE(at::allclose(other.slice(1, 0, 23), logits.slice(1, 0, 23), 1e-5, 1e-6)) << name;
  }
}

TEST(MqarModel, ParameterNamesAndTiedHead) {
  MqarModel model(small_config({"base_conv", "gsa"}), 0);
  std::set<std::string> names;
  for (const auto& [name, tensor] : model.named_parameters()) names.insert(name);
  for (const char* expected :
       {"backbone.embeddings.word_embeddings.weight", "backbone.layers.0.norm1.weight", "backbone.layers.0.norm2.bias",
        "backbone.layers.0.sequence_mixer.projection.weight", "backbone.layers.0.sequence_mixer.conv.weight",
        "backbone.layers.1.sequence_mixer.q_proj.weight", "backbone.layers.1.sequence_mixer.f_proj.weight",
        "backbone.ln_f.weight", "backbone.ln_f.bias"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }
  EXPECT_EQ(names.count("lm_head.weight"), 0u);
  // Embedding init N(0, 0.02).
  EXPECT_NEAR(model.model.embeddings.weight.std().item<double>(), 0.02, 0.002);
}

TEST(MqarModel, ParameterCountAndStateBytesFormulas) {
  // d = 16, V = 64. Embedding 1024 (tied), final LayerNorm 32, 2 × 4d = 128 block norms.
  // base_conv k = 3: d² + d + d·k + d = 336.
  // gsa (2 heads, 4 slots, expand 1): q, k, v, o 4·d² = 1024, f_proj d·H·M = 128, g_norm 16 → 1168.
  // gla (2 heads, key_dim 8, value_dim 16): q, k 2·128, v 256, gk_proj 16·16 + 16·8 + 8 = 392,
  // g_proj 256, g_norm 8, o 256 → 1424.
  const int64_t base = 1024 + 32 + 128;
  EXPECT_EQ(small_config({"base_conv", "gsa"}).parameter_count(), base + 336 + 1168);
  EXPECT_EQ(MqarModel(small_config({"base_conv", "gsa"}), 0).parameter_count(), base + 336 + 1168);
  EXPECT_EQ(small_config({"base_conv", "gla"}).parameter_count(), base + 336 + 1424);
  EXPECT_EQ(MqarModel(small_config({"base_conv", "gla"}), 0).parameter_count(), base + 336 + 1424);

  // State bytes: base_conv d·k·4 = 192; gsa H·(K·M + M·V)·4 = 2·(8·4 + 4·8)·4 = 512;
  // gla H·K·V·4 = 2·4·8·4 = 256.
  EXPECT_EQ(MqarModel(small_config({"base_conv", "gsa"}), 0).state_bytes_per_sequence(), 192 + 512);
  EXPECT_EQ(small_config({"base_conv", "gla", "gla"}).state_bytes_per_sequence(), 192 + 2 * 256);
  // based.md §6: BaseConv d = 64, k = 3 holds 768 bytes; GSA paper: 2·M·d fp32 per layer
  // (d = 128, M = d/4 = 32, 4 heads).
  EXPECT_EQ(lintime::layers::BaseConv::state_bytes_per_sequence(64, 3), 768);
  MqarModelConfig gsa_paper;
  gsa_paper.d_model = 128;
  EXPECT_EQ(gsa_paper.state_bytes_per_sequence(), 4 * 2 * 32 * 128 * 4);
  // based.md §6: [BaseConv k = 3, BASED d = 64, d' = 16] holds 40,548 bytes: 64·3 + 153·64 + 153
  // fp32 values (E = 1 + 16 + 16·17/2 = 153 features).
  MqarModelConfig based;
  based.d_model = 64;
  based.layers = {"base_conv", "based"};
  EXPECT_EQ(based.state_bytes_per_sequence(), 40548);
  EXPECT_EQ(MqarModel(based, 0).state_bytes_per_sequence(), 40548);
  // BASED d = 64, d' = 16, one head: proj_q, proj_k 2·64·16, proj_v and out_proj 2·64².
  EXPECT_EQ(lintime::models::mixer_parameter_count("based", 64, json::object()), 2 * 64 * 16 + 2 * 64 * 64);
  // based.md §6: [BaseConv k = 3, attention d = 64] at L = 1024 holds 525,056 bytes (768 + 2·64·1024·4).
  MqarModelConfig attention;
  attention.d_model = 64;
  attention.layers = {"base_conv", "attention"};
  EXPECT_EQ(attention.state_bytes_per_sequence(), 525056);
  EXPECT_EQ(MqarModel(attention, 0).state_bytes_per_sequence(), 525056);
  // Sliding window w: 2·d·w fp32; linear attention with an elementwise map: d_v·d' + d' per head.
  EXPECT_EQ(lintime::models::mixer_state_bytes_per_sequence("sliding_window", 128, {{"window", 64}}),
            2 * 128 * 64 * 4);
  EXPECT_EQ(lintime::models::mixer_state_bytes_per_sequence("linear_attention", 64,
                                                            {{"feature_map", "relu"}, {"num_heads", 2}}),
            2 * (32 * 16 + 16) * 4);
  EXPECT_EQ(lintime::models::mixer_state_bytes_per_sequence("linear_attention", 64, json::object()), 40548 - 768);
  // Wqkv and out_proj with biases.
  EXPECT_EQ(lintime::models::mixer_parameter_count("attention", 64, json::object()), 4 * 64 * 64 + 4 * 64);
}

TEST(MqarModel, RegistryAndConfigErrors) {
  EXPECT_EQ(lintime::models::mixer_names(),
            (std::vector<std::string>{"gsa", "gla", "retnet", "hgrn2", "base_conv", "based", "linear_attention",
                                      "sliding_window", "attention", "gqa", "based_conv", "mamba"}));
  at::Generator generator = at::detail::createCPUGenerator(0);
  const std::string known =
      "gsa, gla, retnet, hgrn2, base_conv, based, linear_attention, sliding_window, attention, gqa, based_conv, mamba";
  EXPECT_EQ(error_of([&] { lintime::models::make_mixer("rwkv", 16, json::object(), generator); }),
            "unknown sequence mixer \"rwkv\"; known mixers: " + known);
  EXPECT_EQ(error_of([] { MqarModel(small_config({"gsa", "hyena"}), 0); }),
            "config key \"model.layers[1]\": unknown sequence mixer \"hyena\"; known mixers: " + known);
  EXPECT_EQ(error_of([&] { lintime::models::make_mixer("linear_attention", 16, {{"feature_map", "cos"}}, generator); }),
            "BasedLinearAttention: feature_map must be \"taylor\", \"relu\", \"elu+1\" or \"identity\", got \"cos\"");
  EXPECT_NE(error_of([&] { lintime::models::make_mixer("sliding_window", 16, {{"window", 0}}, generator); })
                .find("config key \"model.sliding_window.window\": must be >= 1"),
            std::string::npos);
  auto config = small_config({"gsa"});
  config.mixer_options["gsa"]["slots"] = 8;
  EXPECT_NE(error_of([&] { config.validate(); }).find("config key \"model.gsa.slots\": unknown, expected one of num_heads"),
            std::string::npos);
  config = small_config({"gla"});
  config.mixer_options["gla"] = {{"num_heads", "two"}};
  EXPECT_EQ(error_of([&] { config.validate(); }), "config key \"model.gla.num_heads\": expected an integer, got string \"two\"");
  config.mixer_options["gla"] = {{"num_heads", 3}};
  EXPECT_NE(error_of([&] { config.validate(); }).find("must be a positive multiple of num_heads = 3"),
            std::string::npos);
  config = small_config({"base_conv"});
  config.mixer_options["rwkv"] = json::object();
  EXPECT_NE(error_of([&] { config.validate(); }).find("config key \"model.rwkv\": options for an unknown sequence mixer"),
            std::string::npos);
  config = small_config({});
  EXPECT_NE(error_of([&] { config.validate(); }).find("\"model.layers\": must list at least one sequence mixer"), std::string::npos);
  config = small_config({"base_conv"});
  config.d_model = 0;
  EXPECT_EQ(error_of([&] { MqarModel(config, 0); }), "config key \"model.d_model\": must be >= 1, got 0");

  MqarModel model(small_config({"base_conv"}), 0);
  EXPECT_NE(error_of([&] { model.forward(at::full({1, 4}, 64, at::kLong)); }).find("token ids in [0, 64)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { model.forward(at::zeros({4}, at::kLong)); }).find("shape [B, L]"), std::string::npos);
}

// zoology's embed_dropout: only while training, the same mask for the same generator state;
// evaluation is untouched.
TEST(MqarModel, EmbeddingDropoutOnlyWhileTraining) {
  auto config = small_config({"base_conv"});
  MqarModel plain(config, 5);
  config.embed_dropout = 0.5;
  MqarModel dropped(config, 5);
  auto inputs = at::randint(64, {3, 16}, at::kLong);
  const at::Tensor reference = plain.forward(inputs);
  EXPECT_TRUE(at::equal(dropped.forward(inputs), reference));
  EXPECT_TRUE(at::equal(dropped.forward(inputs, /*training=*/false), reference));
  at::manual_seed(11);
  const at::Tensor first = dropped.forward(inputs, /*training=*/true);
  EXPECT_FALSE(at::allclose(first, reference));
  at::manual_seed(11);
  EXPECT_TRUE(at::equal(dropped.forward(inputs, /*training=*/true), first));
  config.embed_dropout = 1.0;
  EXPECT_EQ(error_of([&] { config.validate(); }), "config key \"model.embed_dropout\": must lie in [0, 1), got 1");
}

TEST(MqarModel, ConfigJsonRoundTrip) {
  auto config = small_config({"base_conv", "gsa"});
  json document = config;
  EXPECT_EQ(document.at("layers"), json({"base_conv", "gsa"}));
  auto back = document.get<MqarModelConfig>();
  EXPECT_EQ(json(back), document);
  EXPECT_EQ(back.parameter_count(), config.parameter_count());

  auto defaults = json::object().get<MqarModelConfig>();
  EXPECT_EQ(defaults.layers.size(), 4u);
  EXPECT_EQ(defaults.d_model, 128);
  EXPECT_NE(error_of([] { json{{"d_model", 16}, {"n_layer", 2}}.get<MqarModelConfig>(); }).find("config key \"model.n_layer\": unknown, expected one of vocab_size, d_model"),
            std::string::npos);
  EXPECT_NE(error_of([] { json{{"layers", "gsa"}}.get<MqarModelConfig>(); }).find("config key \"model.layers\": expected an array of mixer names, got string \"gsa\""),
            std::string::npos);
  EXPECT_NE(error_of([] { json{{"layers", {"gsa", "foo"}}}.get<MqarModelConfig>(); }).find("known mixers: gsa, gla, retnet, hgrn2, base_conv"),
            std::string::npos);
}

TEST(MqarLayers, LayerNormMatchesItsFormula) {
  lintime::layers::LayerNorm norm(8, 1e-5);
  norm.weight.uniform_(0.5, 1.5);
  norm.bias.uniform_(-0.5, 0.5);
  auto x = at::randn({3, 5, 8}, at::kDouble);
  auto mean = x.mean(-1, true);
  auto variance = (x - mean).square().mean(-1, true);
  auto expected = (x - mean) / at::sqrt(variance + 1e-5) * norm.weight.to(at::kDouble) + norm.bias.to(at::kDouble);
  lintime::testing::expect_close("layer_norm fp64", "y", norm.forward(x), expected, 1e-12);
  lintime::testing::expect_close("layer_norm fp32", "y", norm.forward(x.to(at::kFloat)), expected, 1e-5);
  EXPECT_EQ(norm.forward(x.to(at::kBFloat16)).scalar_type(), at::kBFloat16);
}

TEST(MqarLayers, BaseConvMatchesItsFormulaAndDecodes) {
  at::Generator generator = at::detail::createCPUGenerator(5);
  lintime::layers::BaseConv layer(6, 3, 0.02, generator);
  EXPECT_LE(layer.conv.weight.abs().max().item<double>(), 1.0 / std::sqrt(3.0));
  auto u = at::randn({2, 7, 6});
  auto w = layer.conv.weight.view({6, 3});
  auto padded = at::cat({at::zeros({2, 2, 6}), u}, 1);
  auto conv = layer.conv.bias.view({1, 1, 6}).expand({2, 7, 6}).clone();
  for (int64_t j = 0; j < 3; ++j) conv = conv + padded.slice(1, j, j + 7) * w.select(1, j);
  auto expected = conv * (at::matmul(u, layer.projection.weight.t()) + layer.projection.bias) + u;
  auto full = layer.forward(u);
  lintime::testing::expect_close("base_conv", "y", full, expected, 1e-5);
  // Prefill 4 tokens, then decode one at a time from the conv state.
  auto state = at::zeros({2, 2, 6});
  std::vector<at::Tensor> pieces = {layer.forward(u.slice(1, 0, 4), &state)};
  for (int64_t t = 4; t < 7; ++t) pieces.push_back(layer.forward(u.slice(1, t, t + 1), &state));
  lintime::testing::expect_close("base_conv decode", "y", at::cat(pieces, 1), full, 1e-5);
}

// Causal linear attention written out in float64: o_t = Σ_{s≤t} (φq_t·φk_s) v_s / (Σ_{s≤t} φq_t·φk_s + eps).
at::Tensor linear_attention_formula(const at::Tensor& q_features, const at::Tensor& k_features, const at::Tensor& v,
                                    bool normalize, double eps) {
  const int64_t length = q_features.size(1);
  auto scores = at::einsum("bthf,bshf->bhts", {q_features, k_features});                  // [B, H, T, S]
  scores = scores * at::ones({length, length}, scores.options()).tril();
  auto numerator = at::einsum("bhts,bshd->bthd", {scores, v});
  if (!normalize) return numerator;
  return numerator / (scores.sum(-1).transpose(1, 2).unsqueeze(-1) + eps);
}

TEST(MqarLayers, LinearAttentionFeatureMapsMatchTheirFormula) {
  for (const std::string map : {"taylor", "relu", "elu+1", "identity"}) {
    for (const bool normalize : {true, false}) {
      at::Generator generator = at::detail::createCPUGenerator(3);
      lintime::layers::BasedLinearAttentionOptions options;
      options.hidden_size = 12;
      options.num_heads = 2;
      options.feature_dim = 4;
      options.feature_map = map;
      options.normalize = normalize;
      options.eps = 1e-6;
      options.initializer_range = 0.3;
      lintime::layers::BasedLinearAttention layer(options, generator);
      layer.to(at::kCPU, at::kDouble);
      auto x = at::randn({2, 70, 12}, at::kDouble);  // crosses a 64-token chunk
      auto q = at::matmul(x, layer.proj_q.weight.t()).view({2, 70, 2, 4});
      auto k = at::matmul(x, layer.proj_k.weight.t()).view({2, 70, 2, 4});
      auto v = at::matmul(x, layer.proj_v.weight.t()).view({2, 70, 2, 6});
      at::Tensor qf, kf;
      if (map == "taylor") {  // φ(x) = [1, x / d'^{1/4}, x ⊗ x / (√2 √d')] (based.md §1)
        auto taylor = [](const at::Tensor& t) {
          auto outer = (t.unsqueeze(-1) * t.unsqueeze(-2)).flatten(-2) / (std::sqrt(2.0) * 2.0);
          return at::cat({at::ones_like(t.narrow(-1, 0, 1)), t / std::sqrt(2.0), outer}, -1);
        };
        qf = taylor(q);
        kf = taylor(k);
      } else if (map == "relu") {
        qf = q.clamp_min(1e-6);
        kf = k.clamp_min(1e-6);
      } else if (map == "elu+1") {
        qf = at::where(q > 0, q + 1, q.exp());
        kf = at::where(k > 0, k + 1, k.exp());
      } else {
        qf = q;
        kf = k;
      }
      auto o = linear_attention_formula(qf, kf, v, normalize, 1e-6).reshape({2, 70, 12});
      auto expected = at::matmul(o, layer.out_proj.weight.t());
      // float64 against float64, differing in summation order: measured ≤ 5e-16 relative for the
      // positive feature maps, held to 1e-12. The identity map's normaliser Σ_s φq·φk can come
      // near zero, which amplifies rounding by its condition number (Σ|φq·φk| + eps) /
      // |Σ φq·φk + eps|: 4.7e3 here, with errors up to 2.6e-12 that vary from run to run (BLAS's
      // paths depend on memory alignment). The bound is then 64 units of float64 (2^-53) times
      // that amplification, 3.4e-11.
      double amplification = 1.0;
      if (normalize) {
        const int64_t length = qf.size(1);
        auto scores = at::einsum("bthf,bshf->bhts", {qf, kf}) * at::ones({length, length}, at::kDouble).tril();
        amplification = ((scores.abs().sum(-1) + 1e-6) / (scores.sum(-1) + 1e-6).abs()).max().item<double>();
      }
      const double tolerance = std::max(1e-12, 64 * std::ldexp(1.0, -53) * amplification);
      lintime::testing::expect_close("linear_attention " + map + (normalize ? " normalized" : " norm-free"), "y",
                                     layer.forward(x), expected, tolerance);
    }
  }
}

TEST(MqarLayers, SoftmaxAttentionMatchesItsFormula) {
  for (const int64_t window : {0, 1, 5, 64}) {
    at::Generator generator = at::detail::createCPUGenerator(4);
    lintime::layers::SoftmaxAttentionOptions options;
    options.hidden_size = 8;
    options.num_heads = 2;
    options.window = window;
    options.initializer_range = 0.5;
    lintime::layers::SoftmaxAttention layer(options, generator);
    layer.to(at::kCPU, at::kDouble);
    layer.Wqkv.bias.uniform_(-0.2, 0.2);
    layer.out_proj.bias.uniform_(-0.2, 0.2);
    const int64_t length = 20;
    auto x = at::randn({3, length, 8}, at::kDouble);
    auto qkv = (at::matmul(x, layer.Wqkv.weight.t()) + layer.Wqkv.bias).view({3, length, 3, 2, 4});
    auto scores = at::einsum("bthd,bshd->bhts", {qkv.select(2, 0), qkv.select(2, 1)}) / 2.0;  // head_dim^-0.5
    auto t = at::arange(length, at::kLong).view({length, 1}), s = at::arange(length, at::kLong).view({1, length});
    auto visible = (s <= t) & (window == 0 ? s >= 0 : s > t - window);
    scores = scores.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity());
    auto o = at::einsum("bhts,bshd->bthd", {at::softmax(scores, -1), qkv.select(2, 2)}).reshape({3, length, 8});
    auto expected = at::matmul(o, layer.out_proj.weight.t()) + layer.out_proj.bias;
    lintime::testing::expect_close("softmax attention window " + std::to_string(window), "y", layer.forward(x),
                                   expected, 1e-12);
  }
  at::Generator generator = at::detail::createCPUGenerator(4);
  lintime::layers::SoftmaxAttentionOptions bad;
  bad.hidden_size = 8;
  bad.num_heads = 3;
  EXPECT_NE(error_of([&] { lintime::layers::SoftmaxAttention layer(bad, generator); }).find("num_heads"),
            std::string::npos);
}

TEST(MqarLayers, GatedLinearAttentionPrefillAndDecodeMatchFullForward) {
  at::Generator generator = at::detail::createCPUGenerator(9);
  lintime::layers::GatedLinearAttentionOptions options;
  options.hidden_size = 16;
  options.initializer_range = 0.2;  // larger weights than 0.02 so that every term matters
  lintime::layers::GatedLinearAttention layer(options, generator);
  EXPECT_EQ(layer.head_k_dim(), 4);
  EXPECT_EQ(layer.head_v_dim(), 8);
  EXPECT_DOUBLE_EQ(layer.scale(), 0.5);
  auto x = at::randn({2, 70, 16});
  auto full = layer.forward(x);
  ASSERT_EQ(full.sizes(), x.sizes());
  auto state = layer.make_state(2, at::kCPU);
  std::vector<at::Tensor> pieces = {layer.forward(x.slice(1, 0, 66), &state)};
  for (int64_t t = 66; t < 70; ++t) pieces.push_back(layer.forward(x.slice(1, t, t + 1), &state));
  lintime::testing::expect_close("gla prefill 66 + decode 4", "y", at::cat(pieces, 1), full, 1e-4);
  EXPECT_EQ(layer.state_bytes_per_sequence(), state.numel() / 2 * 4);
  EXPECT_EQ(layer.parameter_count(), lintime::layers::GatedLinearAttention::parameter_count_for(options));
  options.use_output_gate = false;
  lintime::layers::GatedLinearAttention ungated(options, generator);
  EXPECT_EQ(ungated.parameter_count(), lintime::layers::GatedLinearAttention::parameter_count_for(options));
  EXPECT_EQ(ungated.forward(x).sizes(), x.sizes());
}

// A few dozen Adam steps on one fixed batch must lower the loss well below its start (a smoke
// test of the training path, not of recall).
void expect_overfits(const std::vector<std::string>& layers, int steps, json mixer_options = json::object()) {
  const auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  MqarModelConfig config;
  config.vocab_size = 32;
  config.d_model = 32;
  config.layers = layers;
  mixer_options["gsa"] = {{"num_heads", 2}, {"num_slots", 8}};
  config.mixer_options = mixer_options;
  MqarModel model(config, 1);
  model.set_requires_grad(true);
  auto [inputs, labels] = fixed_batch(16, 24, 4, 32);

  std::vector<at::Tensor> params, first_moment, second_moment;
  for (auto& [name, tensor] : model.named_parameters()) {
    params.push_back(tensor);
    first_moment.push_back(at::zeros_like(tensor));
    second_moment.push_back(at::zeros_like(tensor));
  }
  const double lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double initial = 0, final_loss = 0;
  for (int step = 1; step <= steps; ++step) {
    model.zero_grad();
    auto loss = loss_of(model.forward(inputs), labels);
    if (step == 1) initial = loss.item<double>();
    final_loss = loss.item<double>();
    loss.backward();
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor grad = params[i].grad();
      first_moment[i].mul_(beta1).add_(grad, 1 - beta1);
      second_moment[i].mul_(beta2).addcmul_(grad, grad, 1 - beta2);
      const double correction1 = 1 - std::pow(beta1, step), correction2 = 1 - std::pow(beta2, step);
      params[i].sub_(lr / correction1 * first_moment[i] / ((second_moment[i] / correction2).sqrt() + eps));
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string name = ::testing::PrintToString(layers);
  EXPECT_LT(final_loss, 0.5 * initial) << name << ": loss " << initial << " -> " << final_loss;
  const double cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  std::printf("overfit %s: loss %.3f -> %.3f in %d steps, %.2f s (%.2f s CPU)\n", name.c_str(), initial, final_loss,
              steps, seconds, cpu_seconds);
}

TEST(MqarModelTraining, BaseConvOnlyOverfits) { expect_overfits({"base_conv", "base_conv"}, 60); }

TEST(MqarModelTraining, BaseConvGlaOverfits) {
  expect_overfits({"base_conv", "gla"}, 60);
}

// Training computes the head at the labelled positions only (MqarModel::logits_at): in float64
// its logits are forward()'s rows there, and the loss over them and its gradients are those of
// the whole-batch loss, to rounding.
TEST(MqarModel, LogitsAtLabelledPositionsGiveTheWholeBatchLossAndGradients) {
  MqarModelConfig config = small_config({"base_conv", "gsa"});
  config.embed_dropout = 0.0;
  MqarModel whole(config, 5), labelled(config, 5);
  whole.to(at::kCPU, at::kDouble);
  labelled.to(at::kCPU, at::kDouble);
  const auto [inputs, labels] = fixed_batch(3, 24, 4, config.vocab_size);
  const at::Tensor positions = labels.reshape({-1}).ne(-100).nonzero().reshape({-1});
  ASSERT_EQ(positions.size(0), 12);

  whole.set_requires_grad(true);
  labelled.set_requires_grad(true);
  const at::Tensor full_logits = whole.forward(inputs, /*training=*/true);
  const at::Tensor rows = labelled.logits_at(inputs, positions, /*training=*/true);
  ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{12, config.vocab_size}));
  const at::Tensor expected_rows = full_logits.reshape({-1, config.vocab_size}).index_select(0, positions);
  EXPECT_LE((rows - expected_rows).abs().max().item<double>(), 1e-12);

  const at::Tensor full_loss = loss_of(full_logits, labels);
  const at::Tensor labelled_loss = at::cross_entropy_loss(rows, labels.reshape({-1}).index_select(0, positions));
  EXPECT_NEAR(labelled_loss.item<double>(), full_loss.item<double>(), 1e-12);
  full_loss.backward();
  labelled_loss.backward();
  const auto whole_parameters = whole.named_parameters(), labelled_parameters = labelled.named_parameters();
  ASSERT_EQ(whole_parameters.size(), labelled_parameters.size());
  for (size_t i = 0; i < whole_parameters.size(); ++i) {
    const at::Tensor& expected = whole_parameters[i].second.grad();
    const at::Tensor& actual = labelled_parameters[i].second.grad();
    ASSERT_TRUE(expected.defined() && actual.defined()) << whole_parameters[i].first;
    EXPECT_LE((actual - expected).abs().max().item<double>(), 1e-12 * (1 + expected.abs().max().item<double>()))
        << whole_parameters[i].first;
  }
}

TEST(MqarModelTraining, GsaOverfits) {
  expect_overfits({"gsa", "gsa"}, 60);
}

TEST(MqarModelTraining, BaseConvBasedOverfits) {
  expect_overfits({"base_conv", "based"}, 60);
}

TEST(MqarModelTraining, BaseConvLinearAttentionOverfits) {
  expect_overfits({"base_conv", "linear_attention"}, 60, {{"linear_attention", {{"feature_map", "elu+1"}}}});
}

TEST(MqarModelTraining, BaseConvSlidingWindowOverfits) {
  expect_overfits({"base_conv", "sliding_window"}, 60, {{"sliding_window", {{"window", 8}}}});
}

TEST(MqarModelTraining, BaseConvAttentionOverfits) { expect_overfits({"base_conv", "attention"}, 60); }

}  // namespace
