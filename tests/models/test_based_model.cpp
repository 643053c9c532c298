// The BASED language model: HazyResearch's config.json fields and window convention, parameter
// names and shapes, each new layer against its formula in float64, the block wiring against a
// hand-written loop, and a short training run.
#include "models/based_model.h"

#include "core/error.h"
#include "layers/gated_conv.h"
#include "layers/gated_mlp.h"
#include "layers/rotary.h"
#include "layers/softmax_attention.h"
#include "support/based_configs.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>

namespace {

using lintime::models::BasedConfig;
using lintime::models::BasedMixer;
using lintime::models::BasedModel;
using lintime::testing::error_of;
using nlohmann::json;

using lintime::testing::based_360m_config;
using lintime::testing::tiny_based_config;

constexpr int kTrainingSteps = 300;

TEST(BasedConfig, ReadsHazyResearchFields) {
  const BasedConfig c = BasedConfig::from_json(based_360m_config());
  EXPECT_EQ(c.hidden_size, 1024);
  EXPECT_EQ(c.num_layers, 27);
  EXPECT_EQ(c.inner_size, 2048);
  EXPECT_EQ(c.padded_vocab_size(), 50264);  // based.md §4
  EXPECT_FALSE(c.mlp_fc1_bias || c.mlp_fc2_bias || c.qkv_proj_bias || c.out_proj_bias);
  EXPECT_TRUE(c.conv_bias && c.rotary && c.tie_word_embeddings && c.residual_in_fp32);
  EXPECT_EQ(c.conv_kernel_size, 3);
  EXPECT_EQ(c.feature_dim, 16);
  EXPECT_EQ(c.linear_attention_eps, 1e-12);
  // flash-attn window (window_size // 2, 0): a query sees 64 earlier keys and itself.
  EXPECT_EQ(c.window, 65);
  // based.md §4: linear attention at 1, 6, 11, 16, 21; SWA at 2, 7, 12, 17, 22; BaseConv elsewhere.
  for (int64_t layer = 0; layer < 27; ++layer) {
    const BasedMixer expected = layer < 23 && layer % 5 == 1   ? BasedMixer::linear_attention
                                : layer < 23 && layer % 5 == 2 ? BasedMixer::sliding_window
                                                               : BasedMixer::conv;
    EXPECT_EQ(c.mixer_of(layer), expected) << "layer " << layer;
  }
  json fla = based_360m_config();
  fla["alt_mixer"]["parallel_implementation"] = "fla_parallel";
  EXPECT_EQ(BasedConfig::from_json(fla).linear_attention_eps, 1e-6);
  json no_inner = based_360m_config();
  no_inner.erase("n_inner");
  EXPECT_EQ(BasedConfig::from_json(no_inner).inner_size, 2816);  // 8·1024/3 = 2730 → 2816
}

TEST(BasedConfig, RejectsWhatItDoesNotRun) {
  auto error_for = [](const std::function<void(json&)>& edit) {
    json config = based_360m_config();
    edit(config);
    return error_of([&] { BasedConfig::from_json(config); });
  };
  EXPECT_EQ(error_for([](json& c) { c.erase("alt_mixer_2"); }),
            "config key \"alt_mixer_2\": missing, but layer 2 uses it");
  EXPECT_EQ(error_for([](json& c) { c["rotary_emb_interleaved"] = true; }),
            "config key \"rotary_emb_interleaved\": expected false (the only BASED variant lintime runs)");
  EXPECT_EQ(error_for([](json& c) { c["alt_mixer_layers"] = {1, 27}; }),
            "config key \"alt_mixer_layers\": layer 27 is outside [0, n_layer = 27)");
  EXPECT_EQ(error_for([](json& c) { c["n_embd"] = "1024"; }),
            "config key \"n_embd\": expected an integer, got string \"1024\"");
  EXPECT_EQ(error_for([](json& c) { c["n_positions"] = 2048; }),
            "config key \"n_positions\": expected 0 (BASED has no learned position embeddings), got 2048");
  EXPECT_NE(error_for([](json& c) { c["alt_mixer"]["feature_map"] = "relu"; }).find("expected the Taylor map"),
            std::string::npos);
  EXPECT_NE(error_for([](json& c) { c["activation_function"] = "gelu_new"; }).find("expected \"swiglu\""),
            std::string::npos);
  EXPECT_NE(error_of([] { BasedConfig::load("/nonexistent/config.json"); }).find("cannot open the BASED config file"),
            std::string::npos);
}

TEST(BasedModel, ParameterNamesAndShapes) {
  const BasedConfig config = BasedConfig::from_json(tiny_based_config());
  at::Generator generator = at::detail::createCPUGenerator(0);
  BasedModel model(config, generator);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, tensor] : model.named_parameters()) shapes[name] = tensor.sizes().vec();
  const int64_t d = 16, vocab = 40, inner = 256;  // 37 → 40; n_inner 24 → 256
  const std::map<std::string, std::vector<int64_t>> expected_some = {
      {"transformer.embeddings.word_embeddings.weight", {vocab, d}},
      {"transformer.layers.0.norm1.weight", {d}},
      {"transformer.layers.0.mixer.in_proj.weight", {4 * d, d}},
      {"transformer.layers.0.mixer.in_proj.bias", {4 * d}},
      {"transformer.layers.0.mixer.conv.conv.weight", {2 * d, 1, 3}},
      {"transformer.layers.0.mixer.out_proj.weight", {d, 2 * d}},
      {"transformer.layers.0.mixer.out_proj.bias", {d}},
      {"transformer.layers.0.norm2.weight", {d}},
      {"transformer.layers.0.mlp.fc1.weight", {2 * inner, d}},
      {"transformer.layers.0.mlp.fc2.weight", {d, inner}},
      {"transformer.layers.1.mixer.proj_q.weight", {8, d}},
      {"transformer.layers.1.mixer.proj_k.weight", {8, d}},
      {"transformer.layers.1.mixer.proj_v.weight", {d, d}},
      {"transformer.layers.1.mixer.out_proj.weight", {d, d}},
      {"transformer.layers.2.mixer.Wqkv.weight", {3 * d, d}},
      {"transformer.layers.2.mixer.out_proj.weight", {d, d}},
      {"transformer.ln_f.weight", {d}}};
  for (const auto& [name, shape] : expected_some) {
    ASSERT_TRUE(shapes.count(name)) << name;
    EXPECT_EQ(shapes[name], shape) << name;
  }
  // Tied head, no biases where the 360M model has none.
  for (const char* absent : {"lm_head.weight", "transformer.layers.0.mlp.fc1.bias",
                             "transformer.layers.2.mixer.Wqkv.bias", "transformer.layers.1.mixer.out_proj.bias"}) {
    EXPECT_EQ(shapes.count(absent), 0u) << absent;
  }
  // Layers 0 and 3: conv; 1: linear attention; 2: sliding window.
  const int64_t conv = 4 * d * d + 4 * d + 2 * d * 3 + 2 * d * d + d;
  const int64_t linear = 2 * 8 * d + 2 * d * d, sliding = 4 * d * d;
  const int64_t per_block = 2 * d + 2 * inner * d + inner * d;
  EXPECT_EQ(model.parameter_count(), vocab * d + d + 4 * per_block + 2 * conv + linear + sliding);
  EXPECT_EQ(BasedModel::parameter_count_for(config), model.parameter_count());
  // Decoding state: conv 2 · 2d inputs each; linear attention 2 heads × (8 + 1) × 15 features
  // (1 + 4 + 10); the window 2 · d · 5 keys and values (window_size 8 → 5 keys).
  EXPECT_EQ(BasedModel::state_bytes_per_sequence_for(config), (2 * 2 * 2 * d + 2 * 9 * 15 + 2 * d * 5) * 4);
  // out_proj and fc2 are drawn with std 0.02 / √(2 n_layer).
  const double fc2_std = model.model.layers[0]->mlp_layer<lintime::layers::GatedMlp>().fc2.weight.std().item<double>();
  EXPECT_NEAR(fc2_std, 0.02 / std::sqrt(8.0), 0.02 / std::sqrt(8.0) * 0.1);
}

TEST(BasedLayers, GatedConvAndMlpMatchTheirFormulas) {
  at::Generator generator = at::detail::createCPUGenerator(1);
  lintime::layers::GatedConv conv(6, 3, 0.3, 0.3, generator);
  conv.to(at::kCPU, at::kDouble);
  conv.in_proj.bias.uniform_(-0.3, 0.3);
  conv.out_proj.bias.uniform_(-0.3, 0.3);
  auto x = at::randn({2, 9, 6}, at::kDouble);
  auto u = at::matmul(x, conv.in_proj.weight.t()) + conv.in_proj.bias;
  auto u1 = u.narrow(-1, 0, 12), u2 = u.narrow(-1, 12, 12);
  // c_t = w[:, 2] u1_t + w[:, 1] u1_{t−1} + w[:, 0] u1_{t−2} (torch Conv1d, padding 2, first T outputs)
  auto w = conv.conv_holder.conv.weight.view({12, 3});
  auto padded = at::cat({at::zeros({2, 2, 12}, at::kDouble), u1}, 1);
  auto c = padded.narrow(1, 2, 9) * w.select(1, 2) + padded.narrow(1, 1, 9) * w.select(1, 1) +
           padded.narrow(1, 0, 9) * w.select(1, 0);
  auto expected = at::matmul(at::silu(c) * u2, conv.out_proj.weight.t()) + conv.out_proj.bias;
  lintime::testing::expect_close("gated conv", "y", conv.forward(x), expected, 1e-12);

  lintime::layers::GatedMlp mlp(6, 5, 0.3, 0.3, generator);
  mlp.to(at::kCPU, at::kDouble);
  auto hidden = at::matmul(x, mlp.fc1.weight.t());
  auto mlp_expected = at::matmul(hidden.narrow(-1, 0, 5) * at::silu(hidden.narrow(-1, 5, 5)), mlp.fc2.weight.t());
  lintime::testing::expect_close("gated mlp", "y", mlp.forward(x), mlp_expected, 1e-12);
}

TEST(BasedLayers, RotarySlidingWindowMatchesItsFormula) {
  // Rotary, half-split: element i pairs with i + D/2 at angle t · base^(−2i/D).
  auto x = at::randn({1, 5, 1, 4}, at::kDouble);
  auto rotated = lintime::layers::apply_rotary(x, 100.0, 3);
  for (int64_t t = 0; t < 5; ++t) {
    for (int64_t i = 0; i < 2; ++i) {
      const double angle = static_cast<double>(t + 3) * std::pow(100.0, -2.0 * static_cast<double>(i) / 4.0);
      const double a = x[0][t][0][i].item<double>(), b = x[0][t][0][i + 2].item<double>();
      EXPECT_NEAR(rotated[0][t][0][i].item<double>(), a * std::cos(angle) - b * std::sin(angle), 1e-12);
      EXPECT_NEAR(rotated[0][t][0][i + 2].item<double>(), b * std::cos(angle) + a * std::sin(angle), 1e-12);
    }
  }
  at::Generator generator = at::detail::createCPUGenerator(2);
  lintime::layers::SoftmaxAttentionOptions options;
  options.hidden_size = 8;
  options.num_heads = 2;
  options.window = 3;
  options.bias = false;
  options.rotary_base = 10000.0;
  options.initializer_range = 0.5;
  lintime::layers::SoftmaxAttention layer(options, generator);
  layer.to(at::kCPU, at::kDouble);
  const int64_t length = 11;
  auto input = at::randn({2, length, 8}, at::kDouble);
  auto qkv = at::matmul(input, layer.Wqkv.weight.t()).view({2, length, 3, 2, 4});
  auto q = lintime::layers::apply_rotary(qkv.select(2, 0), 10000.0);
  auto k = lintime::layers::apply_rotary(qkv.select(2, 1), 10000.0);
  auto scores = at::einsum("bthd,bshd->bhts", {q, k}) / 2.0;
  auto t = at::arange(length, at::kLong).view({length, 1}), s = at::arange(length, at::kLong).view({1, length});
  scores = scores.masked_fill(((s <= t) & (s > t - 3)).logical_not(), -std::numeric_limits<double>::infinity());
  auto o = at::einsum("bhts,bshd->bthd", {at::softmax(scores, -1), qkv.select(2, 2)}).reshape({2, length, 8});
  lintime::testing::expect_close("rotary sliding window", "y", layer.forward(input),
                                 at::matmul(o, layer.out_proj.weight.t()), 1e-12);
}

TEST(BasedModel, ForwardIsTheBlocksOnTheResidualStream) {
  const BasedConfig config = BasedConfig::from_json(tiny_based_config());
  at::Generator generator = at::detail::createCPUGenerator(3);
  BasedModel model(config, generator);
  model.to(at::kCPU, at::kDouble);
  // Norm gains away from 1, as in a trained model.
  model.for_each_parameter([](const std::string& name, at::Tensor& p) {
    if (name.find("norm") != std::string::npos || name.find("ln_f") != std::string::npos) p.uniform_(0.5, 1.5);
  });
  auto ids = at::randint(0, 40, {2, 13}, at::kLong);
  // x_0 = E[ids]; x_{i+1} = x_i + mix(norm1(x_i)) + mlp(norm2(x_i + mix(norm1(x_i)))); logits = ln_f(x_L) Eᵀ.
  at::Tensor x = at::embedding(model.model.embeddings.weight, ids);
  for (const auto& block : model.model.layers) {
    x = x + block->mixer->forward(block->mixer_norm->forward(x));
    x = x + block->mlp->forward(block->mlp_norm->forward(x));
  }
  auto expected = at::matmul(model.model.norm->forward(x), model.model.embeddings.weight.t());
  auto logits = model.forward(ids);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 13, 40}));
  lintime::testing::expect_close("based model", "logits", logits, expected, 1e-12);
  EXPECT_NE(error_of([&] { model.forward(at::full({1, 3}, 40, at::kLong)); }).find("token ids in [0, 40)"),
            std::string::npos);
}

TEST(BasedModel, PrefillAndStepsEqualTheFullForward) {
  const BasedConfig config = BasedConfig::from_json(tiny_based_config());  // window 5 keys
  at::Generator generator = at::detail::createCPUGenerator(5);
  BasedModel model(config, generator);
  model.to(at::kCPU, at::kDouble);
  model.for_each_parameter([](const std::string& name, at::Tensor& p) {
    if (name.find("norm") != std::string::npos || name.find("ln_f") != std::string::npos) p.uniform_(0.5, 1.5);
  });
  auto ids = at::randint(0, 40, {3, 70}, at::kLong);  // past a 64-token chunk and many windows
  const auto full = model.forward(ids);
  auto cache = model.make_cache(3);
  std::vector<at::Tensor> pieces = {model.prefill(ids.narrow(1, 0, 6), cache)};
  const int64_t bytes_after_prefill = cache.allocated_bytes();
  for (int64_t t = 6; t < 70; ++t) pieces.push_back(model.step(ids.select(1, t), cache).unsqueeze(1));
  lintime::testing::expect_close("based prefill + steps", "logits", at::cat(pieces, 1), full, 1e-10);
  EXPECT_EQ(cache.seen_tokens(), 70);
  EXPECT_EQ(cache.allocated_bytes(), bytes_after_prefill) << "the decoding state must not grow with the tokens seen";
  // A sequence may start from a fresh cache with a step: its first token's logits.
  auto fresh = model.make_cache(3);
  lintime::testing::expect_close("based first step", "logits", model.step(ids.select(1, 0), fresh),
                                 full.select(1, 0), 1e-10);
}

// In-context copying, what BASED's mixers are for: each row is P random tokens repeated, so
// every token after the first period equals the one P positions back. Trained on fresh rows
// every step, the tiny model must predict the repeats of rows it never saw (accuracy ≥ 90%)
// while the first period, which no model can predict, stays near chance (1/37).
TEST(BasedModel, LearnsARepeatedSequence) {
  const BasedConfig config = BasedConfig::from_json(tiny_based_config());
  at::Generator generator = at::detail::createCPUGenerator(4);
  BasedModel model(config, generator);
  model.set_requires_grad(true);
  constexpr int64_t kPeriod = 4, kLength = 24, kVocab = 37;
  at::Generator data_generator = at::detail::createCPUGenerator(11);
  auto repeated_rows = [&](int64_t rows) {
    return at::randint(0, kVocab, {rows, kPeriod}, data_generator, at::kLong).repeat({1, kLength / kPeriod});
  };
  std::vector<at::Tensor> params, first_moment, second_moment;
  for (auto& [name, tensor] : model.named_parameters()) {
    params.push_back(tensor);
    first_moment.push_back(at::zeros_like(tensor));
    second_moment.push_back(at::zeros_like(tensor));
  }
  const double lr = 1e-2, beta1 = 0.9, beta2 = 0.999;
  for (int step = 1; step <= kTrainingSteps; ++step) {
    const at::Tensor ids = repeated_rows(32);
    model.zero_grad();
    auto logits = model.forward(ids.narrow(1, 0, kLength - 1)).narrow(-1, 0, kVocab);
    auto loss = at::cross_entropy_loss(logits.reshape({-1, kVocab}), ids.narrow(1, 1, kLength - 1).reshape({-1}));
    loss.backward();
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {  // Adam
      const at::Tensor grad = params[i].grad();
      first_moment[i].mul_(beta1).add_(grad, 1 - beta1);
      second_moment[i].mul_(beta2).addcmul_(grad, grad, 1 - beta2);
      const double correction1 = 1 - std::pow(beta1, step), correction2 = 1 - std::pow(beta2, step);
      params[i].sub_(lr / correction1 * first_moment[i] / ((second_moment[i] / correction2).sqrt() + 1e-8));
    }
  }
  at::NoGradGuard no_grad;
  const at::Tensor held_out = repeated_rows(256);
  const at::Tensor predicted = model.forward(held_out.narrow(1, 0, kLength - 1)).narrow(-1, 0, kVocab).argmax(-1);
  const at::Tensor correct = predicted.eq(held_out.narrow(1, 1, kLength - 1)).to(at::kDouble);
  // Position t predicts token t + 1: a repeat from t = P − 1 on.
  const double repeats = correct.narrow(1, kPeriod - 1, kLength - kPeriod).mean().item<double>();
  const double first_period = correct.narrow(1, 0, kPeriod - 1).mean().item<double>();
  std::printf("repeated tokens %.3f correct, first period %.3f (chance %.3f)\n", repeats, first_period, 1.0 / kVocab);
  EXPECT_GE(repeats, 0.9);
  EXPECT_LE(first_period, 0.1) << "the first period is random: a model predicting it has seen these rows";
}

}  // namespace
