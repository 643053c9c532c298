// GsaModel: fla parameter names, deterministic init, forward shape and dtype, prefill +
// token-by-token decode equals the full forward (fp64 and fp32, grouped queries, short conv),
// parameter count and recurrent state size formulas.
#include "models/gsa_model.h"
#include "core/error.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

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
  EXPECT_TRUE(at::all(model.model.norm.weight == 1).item<bool>());
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
  EXPECT_EQ(cache.bytes(), 5 * GsaModel::state_bytes_per_sequence_for(config));
}

TEST(GsaModel, RejectsHybridAttention) {
  auto config = tiny_config();
  config.attn = nlohmann::json{{"layers", {1}}, {"num_heads", 4}};
  auto generator = make_generator(27);
  EXPECT_THROW(GsaModel(config, generator), lintime::Error);
}

}  // namespace
