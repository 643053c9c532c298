// GsaModel: fla parameter names, deterministic init, forward shape and dtype, prefill +
// token-by-token decode equals the full forward (fp64 and fp32, grouped queries, short conv),
// parameter count and recurrent state size formulas.
#include "models/gsa_model.h"
#include "core/error.h"
#include "layers/grouped_query_attention.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

using lintime::models::GsaConfig;
using lintime::models::GsaModel;
using lintime::testing::expect_close;
using lintime::testing::make_generator;

GsaConfig tiny_config(std::optional<int64_t> kv_heads = std::nullopt, bool short_conv = false, bool tied = false) {
  GsaConfig config;
  config.vocab_size = 61;
  config.hidden_size = 32;
  config.num_hidden_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = kv_heads;
  config.num_slots = 8;
  config.use_short_conv = short_conv;
  config.tie_word_embeddings = tied;
  config.initializer_range = 0.1;  // larger than fla's 0.02 so that tiny models are not near-linear
  return config;
}

at::Tensor random_ids(int64_t batch, int64_t length, int64_t vocab, uint64_t seed) {
  auto generator = make_generator(seed);
  return at::randint(vocab, {batch, length}, generator, at::kLong);
}

TEST(GsaModel, ParameterNamesAreFlas) {
  auto generator = make_generator(21);
  auto config = tiny_config();
  config.num_hidden_layers = 1;
  GsaModel model(config, generator);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : model.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "model.embeddings.weight", "model.layers.0.attn_norm.weight",
                       "model.layers.0.attn.q_proj.weight", "model.layers.0.attn.k_proj.weight",
                       "model.layers.0.attn.v_proj.weight", "model.layers.0.attn.f_proj.weight",
                       "model.layers.0.attn.g_norm.weight", "model.layers.0.attn.o_proj.weight",
                       "model.layers.0.mlp_norm.weight", "model.layers.0.mlp.gate_proj.weight",
                       "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
                       "model.norm.weight", "lm_head.weight"}));
  auto tied_generator = make_generator(21);
  config.tie_word_embeddings = true;
  GsaModel tied(config, tied_generator);
  EXPECT_EQ(tied.named_parameters().back().first, "model.norm.weight");
  EXPECT_TRUE(at::all(model.model.norm->weight == 1).item<bool>());
}

TEST(GsaModel, ForwardShapeAndDeterminism) {
  auto config = tiny_config(2);
  auto generator_a = make_generator(22), generator_b = make_generator(22), generator_c = make_generator(23);
  GsaModel a(config, generator_a), b(config, generator_b), c(config, generator_c);
  auto ids = random_ids(2, 11, config.vocab_size, 1);
  auto logits = a.forward(ids);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 11, config.vocab_size}));
  EXPECT_EQ(logits.scalar_type(), at::kFloat);
  EXPECT_TRUE(logits.isfinite().all().item<bool>());
  EXPECT_TRUE(at::equal(logits, b.forward(ids)));
  EXPECT_FALSE(at::equal(logits, c.forward(ids)));
  a.to(at::kCPU, at::kBFloat16);
  EXPECT_EQ(a.forward(ids).scalar_type(), at::kFloat);
  auto tied_generator = make_generator(22);
  GsaModel tied(tiny_config(2, false, true), tied_generator);
  EXPECT_EQ(tied.forward(ids).sizes(), logits.sizes());
}

struct Case {
  std::string name;
  std::optional<int64_t> kv_heads;
  bool short_conv;
};

TEST(GsaModel, PrefillThenDecodeEqualsFullForward) {
  const std::vector<Case> cases = {{"mha", std::nullopt, false}, {"gqa", 2, false}, {"gqa_conv", 2, true}};
  for (const auto& c : cases) {
    for (auto dtype : {at::kDouble, at::kFloat}) {
      const std::string name = c.name + (dtype == at::kDouble ? " fp64" : " fp32");
      // fp64: summation order only. fp32: chunked vs sequential sums through 2 blocks and
      // 8 decode steps, a few hundred ulps of the largest logit.
      const double tolerance = dtype == at::kDouble ? 1e-10 : 5e-5;
      auto config = tiny_config(c.kv_heads, c.short_conv);
      auto generator = make_generator(24);
      GsaModel model(config, generator);
      model.to(at::kCPU, dtype);
      c10::NoGradGuard no_grad;
      auto ids = random_ids(3, 17, config.vocab_size, 2);
      auto full = model.forward(ids);
      auto cache = model.make_cache(3);
      std::vector<at::Tensor> logits = {model.prefill(ids.narrow(1, 0, 9), cache)};
      for (int64_t t = 9; t < 17; ++t) logits.push_back(model.step(ids.select(1, t), cache).unsqueeze(1));
      expect_close(name, "logits", at::cat(logits, 1), full, tolerance);
      EXPECT_EQ(cache.seen_tokens(), 17);

      // A second prefill resets the cache.
      auto again = model.prefill(ids.narrow(1, 0, 9), cache);
      expect_close(name, "second prefill", again, full.narrow(1, 0, 9), tolerance);
    }
  }
}

TEST(GsaModel, ParameterCountFormula) {
  for (bool tied : {false, true}) {
    for (std::optional<int64_t> kv_heads : {std::optional<int64_t>(), std::optional<int64_t>(2)}) {
      auto config = tiny_config(kv_heads, true, tied);
      auto generator = make_generator(25);
      GsaModel model(config, generator);
      const int64_t d = config.hidden_size, vocab = config.vocab_size, layers = config.num_hidden_layers;
      const int64_t h = config.resolved_num_kv_heads(), group = config.num_heads / h;
      const int64_t key = config.key_dim(), value = config.value_dim(), slots = config.resolved_num_slots();
      const int64_t inner = config.resolved_intermediate_size(), width = config.conv_size;
      const int64_t attention = d * key + d * key / group + d * value / group + d * h * slots + value * d + value +
                                width * (key + key / group + value / group);
      const int64_t expected = vocab * d * (tied ? 1 : 2) + layers * (attention + 3 * d * inner + 2 * d) + d;
      EXPECT_EQ(model.parameter_count(), expected);
      EXPECT_EQ(GsaModel::parameter_count_for(config), expected);
    }
  }
  GsaConfig large;  // fla's defaults: the gsa-1.3B shape
  EXPECT_EQ(GsaModel::parameter_count_for(large),
            2 * 32000 * 2048 + 24 * (4 * 2048 * 2048 + 2048 * 4 * 64 + 2048 + 3 * 2048 * 5632 + 2 * 2048) + 2048);
}

TEST(GsaModel, StateBytes) {
  GsaConfig large;  // d 2048, 24 layers, 4 heads, 64 slots
  EXPECT_EQ(GsaModel::state_bytes_per_sequence_for(large), int64_t{24} * 2 * 64 * 2048 * 4);
  auto config = tiny_config(2, true);
  auto generator = make_generator(26);
  GsaModel model(config, generator);
  auto cache = model.make_cache(5);
  EXPECT_EQ(cache.batch_size(), 5);
  EXPECT_EQ(cache.num_layers(), 2);
  EXPECT_EQ(cache.allocated_bytes(), 5 * GsaModel::state_bytes_per_sequence_for(config));
}

TEST(GsaModel, HybridAttentionLayersAreSoftmaxAttention) {
  // fla's "attn" (one specification, or a list): the layers it names are fla's Attention (q/k/v
  // biases with qkv_bias, none on o_proj, RoPE, an optional window), the others GSA.
  for (const nlohmann::json& attn :
       {nlohmann::json{{"layers", {1}}, {"num_heads", 2}, {"num_kv_heads", 1}, {"qkv_bias", true}, {"window_size", 5}},
        nlohmann::json::array({nlohmann::json{{"layers", {0}}, {"num_heads", 4}},
                               nlohmann::json{{"layers", {2}}, {"num_heads", 2}, {"window_size", 3}}})}) {
    auto config = tiny_config(std::nullopt, true);
    config.num_hidden_layers = 3;
    config.attn = attn;
    auto generator = make_generator(27);
    GsaModel model(config, generator);
    EXPECT_EQ(model.parameter_count(), GsaModel::parameter_count_for(config));
    std::vector<std::string> names;
    for (const auto& [name, tensor] : model.named_parameters()) names.push_back(name);
    auto has = [&](const std::string& name) { return std::find(names.begin(), names.end(), name) != names.end(); };
    const int64_t attention_layer = attn.is_object() ? 1 : 2;
    const std::string prefix = "model.layers." + std::to_string(attention_layer) + ".attn.";
    EXPECT_TRUE(has(prefix + "q_proj.weight") && has(prefix + "o_proj.weight"));
    EXPECT_FALSE(has(prefix + "f_proj.weight") || has(prefix + "o_proj.bias"));
    EXPECT_EQ(has(prefix + "q_proj.bias") && has(prefix + "k_proj.bias") && has(prefix + "v_proj.bias"), attn.is_object());
    const auto& attention =
        model.model.layers[attention_layer]->mixer_layer<lintime::layers::GroupedQueryAttention>();
    EXPECT_EQ(attention.options().head_dim, 16);
    EXPECT_EQ(attention.options().sliding_window.value_or(0), attn.is_object() ? 5 : 3);
    EXPECT_EQ(attention.options().num_kv_heads, attn.is_object() ? 1 : 2);
    EXPECT_NO_THROW(model.model.layers[attention_layer == 1 ? 0 : 1]->mixer_layer<lintime::layers::GatedSlotAttention>());

    // Decoding: prefill, then steps past the window, equals the full forward in fp64.
    model.to(at::kCPU, at::kDouble);
    c10::NoGradGuard no_grad;
    auto ids = random_ids(2, 15, config.vocab_size, 4);
    auto full = model.forward(ids);
    auto cache = model.make_cache(2);
    std::vector<at::Tensor> logits = {model.prefill(ids.narrow(1, 0, 6), cache)};
    for (int64_t t = 6; t < 15; ++t) logits.push_back(model.step(ids.select(1, t), cache).unsqueeze(1));
    expect_close("hybrid", "logits", at::cat(logits, 1), full, 1e-12);
  }
}

TEST(GsaModel, HybridAttentionErrorsNameTheKey) {
  auto error_with = [](const nlohmann::json& attn) {
    auto config = tiny_config();
    config.attn = attn;
    try {
      config.validate();
    } catch (const lintime::Error& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_with({{"layers", {2}}, {"num_heads", 4}}),
            "config key \"attn.layers\": layer 2 is out of range [0, 2)");
  EXPECT_EQ(error_with(nlohmann::json::array({nlohmann::json{{"layers", {0}}, {"num_heads", 4}},
                                              nlohmann::json{{"layers", {0}}, {"num_heads", 2}}})),
            "config key \"attn[1].layers\": layer 0 is assigned twice");
  EXPECT_EQ(error_with({{"layers", {0}}, {"num_heads", 3}}),
            "config key \"attn.num_heads\": expected a positive divisor of hidden_size = 32, got 3");
  EXPECT_NE(error_with({{"layers", {0}}, {"num_heads", 4}, {"qk_norm", true}}).find("config key \"attn.qk_norm\""),
            std::string::npos);
  EXPECT_EQ(error_with({{"layers", {0}}}), "config key \"attn\": \"layers\" and \"num_heads\" are required");
}

}  // namespace
