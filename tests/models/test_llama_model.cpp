// Llama / Mistral (Transformer++): the model against a float64 reference written out here
// (explicit rotary angles, repeated key/value heads, a masked softmax); prefill + step-by-step
// decoding equals the full forward (grouped-query heads, sliding window shorter than the
// sequence, tied head); rotary frequencies of the llama3 and linear scalings; config parsing of
// both transformers spellings and its one-line errors.
#include "core/error.h"
#include "models/llama_model.h"
#include "layers/grouped_query_attention.h"
#include "layers/swiglu_mlp.h"
#include "state/kv_cache.h"
#include "support/test_support.h"
#include "support/trained_magnitudes.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>

namespace {

using lintime::models::LlamaConfig;
using lintime::models::LlamaModel;
using lintime::testing::error_of;
using lintime::testing::relative_max_error;

LlamaConfig tiny_config(const std::string& type, int64_t kv_heads, std::optional<int64_t> window, bool tied) {
  LlamaConfig config;
  config.model_type = type;
  config.vocab_size = 53;
  config.hidden_size = 32;
  config.intermediate_size = 40;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = kv_heads;
  config.head_dim = 12;  // not hidden / heads, as Mistral Nemo
  config.sliding_window = window;
  config.tie_word_embeddings = tied;
  config.rms_norm_eps = 1e-5;
  config.rope.rope_theta = 500.0;
  config.attention_bias = type == "llama";  // biases exercised in one of the two
  config.validate();
  return config;
}

// fp64, weights at trained magnitudes (unit-scale projections, norm gains away from 1).
std::unique_ptr<LlamaModel> trained_like(const LlamaConfig& config, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto model = std::make_unique<LlamaModel>(config, generator);
  lintime::testing::set_trained_magnitudes(*model, generator);
  model->to(c10::Device(c10::kCPU), at::kDouble);
  return model;
}

// The Hugging Face computation written out in fp64 from the parameters.
at::Tensor reference_logits(const LlamaModel& model, const at::Tensor& ids) {
  const LlamaConfig& c = model.config();
  const int64_t B = ids.size(0), T = ids.size(1), H = c.num_attention_heads,
                Hkv = c.resolved_num_key_value_heads(), D = c.resolved_head_dim();
  auto rms = [&](const at::Tensor& x, const at::Tensor& w) {
    return x / at::sqrt(x.square().mean(-1, true) + c.rms_norm_eps) * w;
  };
  auto linear = [](const at::Tensor& x, const lintime::layers::Linear& l) {
    at::Tensor y = at::matmul(x, l.weight.t());
    return l.bias.defined() ? y + l.bias : y;
  };
  const at::Tensor inverse = lintime::layers::rotary_inverse_frequencies(c.rope, D);  // [D/2]
  const at::Tensor angles = at::outer(at::arange(T, at::kDouble), inverse);           // [T, D/2]
  const at::Tensor cos = at::cat({angles.cos(), angles.cos()}, 1), sin = at::cat({angles.sin(), angles.sin()}, 1);
  auto rotate = [&](const at::Tensor& x) {  // [B, h, T, D]
    const at::Tensor rotated_half = at::cat({-x.narrow(3, D / 2, D / 2), x.narrow(3, 0, D / 2)}, 3);
    return x * cos + rotated_half * sin;
  };
  at::Tensor allowed = at::ones({T, T}, at::kBool).tril();
  if (c.sliding_window) allowed = allowed & at::ones({T, T}, at::kBool).triu(-(*c.sliding_window - 1));
  at::Tensor x = model.model.embeddings.weight.index_select(0, ids.flatten()).view({B, T, -1});
  for (const auto& block : model.model.layers) {
    const at::Tensor h = rms(x, block->mixer_norm->weight);
    const auto& attention = block->mixer_layer<lintime::layers::GroupedQueryAttention>();
    const at::Tensor q = rotate(linear(h, attention.q_proj).view({B, T, H, D}).transpose(1, 2));
    at::Tensor k = rotate(linear(h, attention.k_proj).view({B, T, Hkv, D}).transpose(1, 2));
    at::Tensor v = linear(h, attention.v_proj).view({B, T, Hkv, D}).transpose(1, 2);
    k = k.repeat_interleave(H / Hkv, 1);
    v = v.repeat_interleave(H / Hkv, 1);
    at::Tensor scores = at::matmul(q, k.transpose(2, 3)) / std::sqrt(static_cast<double>(D));
    scores = scores.masked_fill(allowed.logical_not(), -INFINITY);
    const at::Tensor o = at::matmul(at::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, H * D});
    x = x + linear(o, attention.o_proj);
    const at::Tensor m = rms(x, block->mlp_norm->weight);
    const auto& mlp = block->mlp_layer<lintime::layers::SwiGluMlp>();
    x = x + linear(at::silu(linear(m, mlp.gate_proj)) * linear(m, mlp.up_proj), mlp.down_proj);
  }
  x = rms(x, model.model.norm->weight);
  const at::Tensor head = model.lm_head ? model.lm_head->weight : model.model.embeddings.weight;
  return at::matmul(x, head.t());
}

struct Case {
  std::string type;
  int64_t kv_heads;
  std::optional<int64_t> window;
  bool tied;
};

const std::vector<Case> kCases = {
    {"llama", 4, std::nullopt, false}, {"llama", 2, std::nullopt, true}, {"mistral", 1, 5, true},
    {"mistral", 2, 64, false}};

TEST(LlamaModel, MatchesFloat64Reference) {
  at::NoGradGuard no_grad;
  for (const Case& c : kCases) {
    auto model = trained_like(tiny_config(c.type, c.kv_heads, c.window, c.tied), 7);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(3);
    const at::Tensor ids = at::randint(0, 53, {3, 13}, generator, at::kLong);
    const at::Tensor expected = reference_logits(*model, ids);
    const at::Tensor actual = model->forward(ids);
    EXPECT_EQ(actual.scalar_type(), at::kDouble);
    EXPECT_LT(relative_max_error(actual, expected), 1e-12) << c.type << " kv " << c.kv_heads;
  }
}

TEST(LlamaModel, PrefillThenStepsEqualsFullForward) {
  at::NoGradGuard no_grad;
  for (const Case& c : kCases) {
    for (int64_t reserve : {0, 40}) {
      auto model = trained_like(tiny_config(c.type, c.kv_heads, c.window, c.tied), 11);
      at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(5);
      const at::Tensor ids = at::randint(0, 53, {2, 21}, generator, at::kLong);
      const at::Tensor full = model->forward(ids);
      auto cache = model->make_cache(2, reserve);
      std::vector<at::Tensor> pieces = {model->prefill(ids.narrow(1, 0, 4), cache)};
      for (int64_t t = 4; t < ids.size(1); ++t) pieces.push_back(model->step(ids.select(1, t), cache).unsqueeze(1));
      EXPECT_EQ(cache.seen_tokens(), 21);
      EXPECT_EQ(dynamic_cast<lintime::state::KvLayerCache&>(cache.layer(0)).length, 21);
      EXPECT_LT(relative_max_error(at::cat(pieces, 1), full), 1e-12)
          << c.type << " window " << c.window.value_or(0) << " reserve " << reserve;
    }
  }
}

TEST(LlamaModel, ChunkAfterCacheEqualsFullForward) {
  // A multi-token chunk after cached tokens takes the explicit-mask path (window and causal).
  at::NoGradGuard no_grad;
  auto model = trained_like(tiny_config("mistral", 2, 4, false), 13);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(9);
  const at::Tensor ids = at::randint(0, 53, {2, 15}, generator, at::kLong);
  auto cache = model->make_cache(2);
  model->prefill(ids.narrow(1, 0, 6), cache);
  const at::Tensor rest = model->forward(ids.narrow(1, 6, 9), &cache);
  EXPECT_LT(relative_max_error(rest, model->forward(ids).narrow(1, 6, 9)), 1e-12);
}

TEST(LlamaModel, RotaryScalingsFollowHuggingFace) {
  lintime::models::RopeSettings rope;
  rope.rope_theta = 500000.0;
  const at::Tensor plain = lintime::layers::rotary_inverse_frequencies(rope, 128);
  EXPECT_NEAR(plain[1].item<double>(), std::pow(500000.0, -2.0 / 128.0), 1e-18);
  rope.rope_type = "linear";
  rope.factor = 4.0;
  EXPECT_LT(relative_max_error(lintime::layers::rotary_inverse_frequencies(rope, 128), plain / 4.0), 1e-15);
  // Llama 3.1 (factor 8, low 1, high 4, original 8192): wavelengths under 2048 kept, over 8192
  // divided by 8, between blended by (8192 / wavelength − 1) / 3.
  rope.rope_type = "llama3";
  rope.factor = 8.0;
  rope.low_freq_factor = 1.0;
  rope.high_freq_factor = 4.0;
  rope.original_max_position_embeddings = 8192;
  const at::Tensor scaled = lintime::layers::rotary_inverse_frequencies(rope, 128);
  for (int64_t i = 0; i < 64; ++i) {
    const double f = plain[i].item<double>(), wavelength = 2 * M_PI / f;
    double expected = f;
    if (wavelength > 8192) {
      expected = f / 8;
    } else if (wavelength >= 2048) {
      const double smooth = (8192 / wavelength - 1) / 3;
      expected = (1 - smooth) * f / 8 + smooth * f;
    }
    EXPECT_NEAR(scaled[i].item<double>() / expected, 1.0, 1e-14) << i;
  }
}

TEST(LlamaConfig, ReadsBothRotarySpellings) {
  const nlohmann::json v4 = {{"model_type", "llama"}, {"hidden_size", 64}, {"num_attention_heads", 4},
                             {"rope_theta", 5e5},
                             {"rope_scaling", {{"type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                               {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}}},
                             {"eos_token_id", {128001, 128009}}};
  nlohmann::json v5 = v4;
  v5.erase("rope_theta");
  v5.erase("rope_scaling");
  v5["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 5e5}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
  for (const auto& json : {v4, v5}) {
    const LlamaConfig config = LlamaConfig::from_json(json);
    EXPECT_EQ(config.rope.rope_type, "llama3");
    EXPECT_EQ(config.rope.rope_theta, 5e5);
    EXPECT_EQ(config.rope.original_max_position_embeddings, 16);
    EXPECT_EQ(config.eos_token_ids, (std::vector<int64_t>{128001, 128009}));
    const LlamaConfig again = LlamaConfig::from_json(config.to_json());
    EXPECT_EQ(again.to_json(), config.to_json());
  }
  // Mistral's defaults: sliding window 4096, 8 key/value heads.
  const LlamaConfig mistral = LlamaConfig::from_json({{"model_type", "mistral"}, {"hidden_size", 64},
                                                      {"num_attention_heads", 8}});
  EXPECT_EQ(mistral.sliding_window, 4096);
  EXPECT_EQ(mistral.resolved_num_key_value_heads(), 8);
}

TEST(LlamaConfig, RejectsWhatItCannotRunWithOneLine) {
  const nlohmann::json base = {{"model_type", "llama"}, {"hidden_size", 64}, {"num_attention_heads", 4}};
  auto error_with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json json = base;
    json[key] = value;
    return error_of([&] { LlamaConfig::from_json(json); });
  };
  EXPECT_NE(error_with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}).find("\"yarn\" is not supported"),
            std::string::npos);
  EXPECT_NE(error_with("num_key_value_heads", 3).find("num_key_value_heads"), std::string::npos);
  EXPECT_NE(error_with("hidden_act", "gelu").find("hidden_act"), std::string::npos);
  EXPECT_NE(error_with("pretraining_tp", 2).find("pretraining_tp"), std::string::npos);
  EXPECT_NE(error_with("quantization_config", nlohmann::json::object()).find("unknown key"), std::string::npos);
  EXPECT_NE(error_with("vocab_size", "many").find("expected an integer"), std::string::npos);
  for (const std::string& message :
       {error_with("rope_scaling", {{"rope_type", "yarn"}}), error_with("num_key_value_heads", 3)}) {
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

}  // namespace
