// The BASED language model on a GPU: bf16 prefill (the fused Taylor prefill kernel in its linear
// attention layers) and decoding (the fused step) against the float64 model on the CPU. Label
// `cuda`: `ctest -L cuda` runs it on a GPU machine; without a GPU it skips with a message.
#include "models/based_model.h"

#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

using lintime::models::BasedConfig;
using lintime::models::BasedModel;
using lintime::testing::relative_rms_error;

TEST(BasedModelCuda, Bf16PrefillAndDecodingFollowTheFloat64Model) {
  LINTIME_SKIP_WITHOUT_CUDA();
  // Four layers (conv, linear attention with d' 16, sliding window of 5 keys, conv), d 64.
  const nlohmann::json json = {
      {"vocab_size", 50}, {"n_embd", 64}, {"n_layer", 4}, {"n_head", 4}, {"n_inner", 128},
      {"rotary_emb_fraction", 1}, {"mlp_fc1_bias", false}, {"mlp_fc2_bias", false}, {"qkv_proj_bias", false},
      {"out_proj_bias", false}, {"alt_mixer_layers", {1}}, {"alt_mixer_2_layers", {2}},
      {"mixer", {{"_target_", "based.models.mixers.convolution.BaseConv"}}},
      {"alt_mixer", {{"_target_", "based.models.mixers.linear_attention.LinearAttention"}, {"feature_dim", 16},
                     {"num_heads", 1}}},
      {"alt_mixer_2", {{"_target_", "based.models.mixers.slide_attention.SlidingAttention"}, {"window_size", 8}}}};
  const BasedConfig config = BasedConfig::from_json(json);
  at::Generator generator = at::detail::createCPUGenerator(7);
  BasedModel reference(config, generator);
  reference.for_each_parameter([](const std::string& name, at::Tensor& p) {
    if (name.find("norm") != std::string::npos || name.find("ln_f") != std::string::npos) p.uniform_(0.5, 1.5);
  });
  at::Generator same = at::detail::createCPUGenerator(7);
  BasedModel model(config, same);
  model.for_each_parameter([&](const std::string& name, at::Tensor& p) {
    for (const auto& [other, q] : reference.named_parameters()) {
      if (other == name) p.copy_(q);
    }
  });
  reference.to(at::kCPU, at::kDouble);
  model.to(at::kCUDA, at::kBFloat16);
  at::NoGradGuard no_grad;
  auto ids = at::randint(0, 50, {2, 150}, at::kLong);
  const auto expected = reference.forward(ids);
  const auto full = model.forward(ids.cuda());
  // bf16 weights and activations through four layers: a few bf16 roundings (2^-9 each) of every
  // logit; measured 2.8e-3 on an H100.
  EXPECT_LE(relative_rms_error(full.cpu().to(at::kDouble), expected), 1e-2);
  auto cache = model.make_cache(2);
  std::vector<at::Tensor> pieces = {model.prefill(ids.narrow(1, 0, 100).cuda(), cache)};
  for (int64_t t = 100; t < 150; ++t) pieces.push_back(model.step(ids.select(1, t).cuda(), cache).unsqueeze(1));
  const auto decoded = at::cat(pieces, 1);
  const double decoded_error = relative_rms_error(decoded.cpu().to(at::kDouble), expected);
  const double decoded_vs_full = relative_rms_error(decoded.cpu().to(at::kDouble), full.cpu().to(at::kDouble));
  std::printf("bf16 on the GPU against float64: full forward %.2e, prefill + steps %.2e (%.2e from the full)\n",
              relative_rms_error(full.cpu().to(at::kDouble), expected), decoded_error, decoded_vs_full);
  EXPECT_LE(decoded_error, 1e-2);
  EXPECT_LE(decoded_vs_full, 5e-3);  // measured 9e-4: the chunked and token-by-token roundings
}

}  // namespace
