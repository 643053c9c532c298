// fla's GLA language model on lintime's decoder stack: fla's parameter names, a float64
// reference of fla's GLABlock written out here (the GLA recurrence as a loop over tokens),
// prefill + decode equal to the full forward, config.json as fla writes it, a model folder
// (config.json + safetensors) that loads back to the same logits through the architecture
// registry, and one-line errors for what lintime does not run.
#include "core/error.h"
#include "io/model_folder.h"
#include "layers/gated_linear_attention.h"
#include "models/architecture.h"
#include "models/gla_model.h"
#include "support/test_support.h"
#include "support/trained_magnitudes.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <set>
#include <string>
#include <vector>

namespace {

using lintime::models::GlaConfig;
using lintime::models::GlaModel;
using lintime::testing::error_of;
using lintime::testing::make_generator;
using lintime::testing::relative_max_error;

GlaConfig tiny_config(bool tied = false, bool output_gate = true) {
  GlaConfig config;
  config.vocab_size = 53;
  config.hidden_size = 32;
  config.num_hidden_layers = 2;
  config.num_heads = 2;  // key dim 16: heads of 8 keys and 16 values
  config.use_output_gate = output_gate;
  config.tie_word_embeddings = tied;
  config.norm_eps = 1e-6;
  config.validate();
  return config;
}

std::unique_ptr<GlaModel> trained_like(const GlaConfig& config, uint64_t seed) {
  auto generator = make_generator(seed);
  auto model = std::make_unique<GlaModel>(config, generator);
  lintime::testing::set_trained_magnitudes(*model, generator);
  model->to(at::kCPU, at::kDouble);
  return model;
}

// fla's GLAForCausalLM in float64, from the weights alone.
at::Tensor reference_logits(GlaModel& model, const at::Tensor& ids) {
  const GlaConfig& c = model.config();
  std::map<std::string, at::Tensor> w;
  for (const auto& [name, tensor] : model.named_parameters()) w[name] = tensor;
  const int64_t B = ids.size(0), T = ids.size(1), H = c.num_heads;
  const int64_t K = c.key_dim() / H, V = c.value_dim() / H;
  auto rms = [&](const at::Tensor& x, const at::Tensor& weight) {
    return x / at::sqrt(x.square().mean(-1, true) + c.norm_eps) * weight;
  };
  auto linear = [&](const at::Tensor& x, const std::string& name) {
    at::Tensor y = at::matmul(x, w.at(name + ".weight").t());
    return w.count(name + ".bias") ? y + w.at(name + ".bias") : y;
  };
  at::Tensor x = w.at("model.embeddings.weight").index_select(0, ids.flatten()).view({B, T, -1});
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    const at::Tensor h = rms(x, w.at(p + "attn_norm.weight"));
    const at::Tensor q = linear(h, p + "attn.q_proj").view({B, T, H, K});
    const at::Tensor k = linear(h, p + "attn.k_proj").view({B, T, H, K});
    const at::Tensor v = linear(h, p + "attn.v_proj").view({B, T, H, V});
    const at::Tensor gk =
        at::log_sigmoid(linear(linear(h, p + "attn.gk_proj.0"), p + "attn.gk_proj.1")).view({B, T, H, K}) / 16.0;
    at::Tensor state = at::zeros({B, H, K, V}, x.options());
    std::vector<at::Tensor> outputs;
    for (int64_t t = 0; t < T; ++t) {  // S_t = Diag(exp(gk_t)) S_{t-1} + k_t v_tᵀ, o_t = K^-1/2 S_tᵀ q_t
      state = state * gk.select(1, t).exp().unsqueeze(-1) +
              k.select(1, t).unsqueeze(-1) * v.select(1, t).unsqueeze(-2);
      outputs.push_back(at::einsum("bhk,bhkv->bhv", {q.select(1, t), state}) / std::sqrt(static_cast<double>(K)));
    }
    at::Tensor o = at::stack(outputs, 1);  // [B, T, H, V]
    const std::string norm = p + "attn." + c.norm_name() + ".weight";
    o = rms(o, w.at(norm)).reshape({B, T, H * V});
    if (c.use_output_gate) o = o * at::silu(linear(h, p + "attn.g_proj"));
    x = x + linear(o, p + "attn.o_proj");
    const at::Tensor m = rms(x, w.at(p + "mlp_norm.weight"));
    x = x + linear(at::silu(linear(m, p + "mlp.gate_proj")) * linear(m, p + "mlp.up_proj"), p + "mlp.down_proj");
  }
  x = rms(x, w.at("model.norm.weight"));
  const at::Tensor head = c.tie_word_embeddings ? w.at("model.embeddings.weight") : w.at("lm_head.weight");
  return at::matmul(x, head.t());
}

TEST(GlaModel, ParameterNamesAreFlas) {
  auto generator = make_generator(1);
  auto config = tiny_config();
  config.num_hidden_layers = 1;
  GlaModel model(config, generator);
  std::set<std::string> names;
  for (const auto& [name, tensor] : model.named_parameters()) names.insert(name);
  const std::string p = "model.layers.0.";
  EXPECT_EQ(names, (std::set<std::string>{"model.embeddings.weight", p + "attn_norm.weight", p + "attn.q_proj.weight",
                                          p + "attn.k_proj.weight", p + "attn.v_proj.weight", p + "attn.g_proj.weight",
                                          p + "attn.gk_proj.0.weight", p + "attn.gk_proj.1.weight",
                                          p + "attn.gk_proj.1.bias", p + "attn.g_norm_swish_gate.weight",
                                          p + "attn.o_proj.weight", p + "mlp_norm.weight", p + "mlp.gate_proj.weight",
                                          p + "mlp.up_proj.weight", p + "mlp.down_proj.weight", "model.norm.weight",
                                          "lm_head.weight"}));
  EXPECT_EQ(model.parameter_count(), GlaModel::parameter_count_for(config));
  // Without fla's fused gated norm (fuse_norm false, or hidden_act "silu") the norm is "g_norm".
  config.fuse_flags["fuse_norm"] = false;
  EXPECT_EQ(config.norm_name(), "g_norm");
  GlaModel unfused(config, generator);
  std::set<std::string> unfused_names;
  for (const auto& [name, tensor] : unfused.named_parameters()) unfused_names.insert(name);
  EXPECT_TRUE(unfused_names.count(p + "attn.g_norm.weight"));
  EXPECT_FALSE(unfused_names.count(p + "attn.g_norm_swish_gate.weight"));
}

TEST(GlaModel, MatchesFloat64ReferenceOfFlasBlock) {
  at::NoGradGuard no_grad;
  for (bool tied : {false, true}) {
    for (bool gate : {true, false}) {
      auto model = trained_like(tiny_config(tied, gate), 3);
      const at::Tensor ids = at::randint(53, {2, 19}, make_generator(4), at::kLong);
      const at::Tensor logits = model->forward(ids);
      EXPECT_EQ(logits.scalar_type(), at::kDouble);
      EXPECT_LT(relative_max_error(logits, reference_logits(*model, ids)), 1e-12) << "tied " << tied << " gate " << gate;
    }
  }
}

TEST(GlaModel, PrefillThenDecodeEqualsFullForward) {
  at::NoGradGuard no_grad;
  for (at::ScalarType dtype : {at::kDouble, at::kFloat}) {
    auto model = trained_like(tiny_config(), 5);
    model->to(at::kCPU, dtype);
    const at::Tensor ids = at::randint(53, {3, 21}, make_generator(6), at::kLong);
    const at::Tensor full = model->forward(ids);
    auto cache = model->make_cache(3);
    std::vector<at::Tensor> pieces = {model->prefill(ids.narrow(1, 0, 7), cache)};
    for (int64_t t = 7; t < 21; ++t) pieces.push_back(model->step(ids.select(1, t), cache).unsqueeze(1));
    EXPECT_EQ(cache.seen_tokens(), 21);
    // fp64: rounding only; fp32: the chunked prefill and the step sum in another order.
    EXPECT_LT(relative_max_error(at::cat(pieces, 1), full), dtype == at::kDouble ? 1e-12 : 1e-5) << dtype;
  }
}

TEST(GlaModel, FolderRoundTripsThroughTheArchitectureRegistry) {
  lintime::testing::TempDir dir;
  for (bool tied : {false, true}) {
    auto config = tiny_config(tied);
    config.attn = nlohmann::json{{"layers", {1}}, {"num_heads", 4}, {"window_size", 6}};  // a hybrid too
    auto model = trained_like(config, 7);
    model->to(at::kCPU, at::kFloat);
    const std::string folder = dir.file(tied ? "tied" : "untied");
    lintime::io::save_model_folder(model->named_parameters(), model->config().to_json(), folder);
    const nlohmann::json written = lintime::io::read_model_config(folder);
    EXPECT_EQ(GlaConfig::from_json(written).to_json(), model->config().to_json());
    const auto& architecture = lintime::models::architecture_of(written, folder);
    EXPECT_STREQ(architecture.name, "gla");
    EXPECT_NE(architecture.describe(written).find("GLA causal LM (fla model_type gla), hidden 32, 2 layers, 1 "
                                                  "softmax-attention layers"),
              std::string::npos);
    auto loaded = lintime::models::load_causal_lm(folder, at::kFloat, at::kCPU);
    EXPECT_EQ(loaded->name(), "GLA (fla)");
    at::NoGradGuard no_grad;
    const at::Tensor ids = at::randint(53, {2, 11}, make_generator(8), at::kLong);
    EXPECT_TRUE(at::equal(loaded->forward(ids), model->forward(ids))) << "tied " << tied;
    // Decoding through the commands' wrapper: the prompt's last logits, then steps.
    const at::Tensor last = loaded->prefill(ids.narrow(1, 0, 8), 11);
    EXPECT_LT(relative_max_error(last, model->forward(ids.narrow(1, 0, 8)).select(1, -1)), 1e-5);
  }
}

TEST(GlaModel, ConfigAsFlaWritesItAndOneLineErrors) {
  // The keys of fla's GLAConfig().to_dict() with transformers' bookkeeping keys.
  const nlohmann::json fla = {
      {"model_type", "gla"}, {"architectures", {"GLAForCausalLM"}}, {"attn", nullptr}, {"attn_mode", "chunk"},
      {"attnres_block_size", nullptr}, {"bos_token_id", 1}, {"clamp_min", nullptr}, {"conv_size", 4},
      {"elementwise_affine", true}, {"eos_token_id", 2}, {"expand_k", 0.5}, {"expand_v", 1}, {"feature_map", nullptr},
      {"fuse_cross_entropy", true}, {"fuse_linear_cross_entropy", false}, {"fuse_norm", true}, {"fuse_swiglu", true},
      {"hidden_act", "swish"}, {"hidden_ratio", 4}, {"hidden_size", 2048}, {"initializer_range", 0.02},
      {"intermediate_size", nullptr}, {"max_position_embeddings", 2048}, {"norm_eps", 1e-06}, {"num_heads", 4},
      {"num_hidden_layers", 24}, {"num_kv_heads", nullptr}, {"pad_token_id", nullptr}, {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"}, {"transformers_version", "4.53.0"}, {"use_cache", true}, {"use_gk", true},
      {"use_gv", false}, {"use_l2warp", false}, {"use_output_gate", true}, {"use_short_conv", false},
      {"vocab_size", 32000}};
  const GlaConfig config = GlaConfig::from_json(fla);
  EXPECT_EQ(config.resolved_intermediate_size(), 5632);
  EXPECT_EQ(GlaConfig::from_json(config.to_json()).to_json(), config.to_json());
  // fla's gla-1.3B shape: 24 × (q, k: d × d/2; v, g, o: d × d; gk: d × 16 + 16 × d/2 + d/2; the
  // gated norm: 512) + the MLPs, norms, embeddings and head.
  const int64_t d = 2048;
  EXPECT_EQ(GlaModel::parameter_count_for(config),
            2 * 32000 * d + 24 * (2 * d * d / 2 + 3 * d * d + d * 16 + 16 * d / 2 + d / 2 + 512 + 3 * d * 5632 + 2 * d) + d);
  EXPECT_EQ(GlaModel::state_bytes_per_sequence_for(config), 24 * 4 * 256 * 512 * 4);

  auto with = [&](const char* key, const nlohmann::json& value) {
    nlohmann::json changed = fla;
    changed[key] = value;
    return error_of([&] { GlaConfig::from_json(changed); });
  };
  EXPECT_EQ(with("feature_map", "relu"), "");
  EXPECT_EQ(with("feature_map", "elu"),
            "config key \"feature_map\": expected null, \"relu\", \"swish\" or \"silu\", got \"elu\"");
  EXPECT_EQ(with("use_short_conv", true),
            "config key \"use_short_conv\": expected false (short convolutions are not supported for GLA yet)");
  EXPECT_EQ(with("num_kv_heads", 2), "config key \"num_kv_heads\": expected null or num_heads = 4 (grouped key/value "
                                     "heads are not supported for GLA yet), got 2");
  EXPECT_EQ(with("gate_fn", "swish"), "config key \"gate_fn\": unknown key for model_type \"gla\"");
  EXPECT_EQ(with("num_heads", 3), "config key \"num_heads\": expected a divisor of hidden_size * expand_k = 1024, got 3");
}

}  // namespace
