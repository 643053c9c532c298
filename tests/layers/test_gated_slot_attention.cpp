// GatedSlotAttention against a float64 recurrence written from gsa.md §1 and §3; prefill +
// token-by-token decode equals the full forward (fp64, fp32, grouped queries, short conv);
// varlen packing equals separate sequences; option validation and state size.
#include "layers/gated_slot_attention.h"
#include "core/error.h"
#include "state/gsa_state.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using lintime::layers::GatedSlotAttention;
using lintime::layers::GatedSlotAttentionOptions;
using lintime::testing::expect_close;
using lintime::testing::make_generator;

// fp64 runs differ only by summation order: 1e-10 leaves room for T·M·K-term sums.
constexpr double kFloat64Tolerance = 1e-10;
// fp32 chunked vs sequential summation over <= 20 tokens, K, M <= 16 terms per product:
// a few hundred ulps (2^-23 ≈ 1.2e-7) of the largest output.
constexpr double kFloat32Tolerance = 5e-5;

GatedSlotAttentionOptions small_options(int64_t kv_heads, bool short_conv) {
  GatedSlotAttentionOptions options;
  options.hidden_size = 24;
  options.num_heads = 4;
  options.num_kv_heads = kv_heads;
  options.num_slots = 8;
  options.expand_k = 1.0;
  options.expand_v = 2.0;
  options.use_short_conv = short_conv;
  options.initializer_range = 0.2;  // large enough that gates and softmax are far from uniform
  return options;
}

at::Tensor swish(const at::Tensor& x) { return x * at::sigmoid(x); }

// The layer written out step by step in fp64 from its weights.
at::Tensor layer_reference(GatedSlotAttention& layer, const at::Tensor& x_in) {
  auto x = x_in.to(at::kDouble);
  auto weight = [](const at::Tensor& w) { return w.detach().to(at::kDouble); };
  const int64_t batch = x.size(0), length = x.size(1);
  const int64_t heads = layer.num_heads(), kv_heads = layer.num_kv_heads(), group = heads / kv_heads;
  const int64_t key = layer.head_k_dim(), value = layer.head_v_dim(), slots = layer.num_slots();
  auto q = at::matmul(x, weight(layer.q_proj.weight).t());
  auto k = at::matmul(x, weight(layer.k_proj.weight).t());
  auto v = at::matmul(x, weight(layer.v_proj.weight).t());
  if (layer.options().use_short_conv) {
    auto conv = [&](const at::Tensor& input, const at::Tensor& w) {
      auto wd = weight(w).squeeze(1);  // [D, W]
      const int64_t width = wd.size(1);
      auto padded = at::cat({at::zeros({batch, width - 1, input.size(2)}, input.options()), input}, 1);
      auto out = at::zeros_like(input);
      for (int64_t j = 0; j < width; ++j) out = out + padded.narrow(1, j, length) * wd.select(1, j);
      return at::silu(out);
    };
    q = conv(q, layer.q_conv1d->weight);
    k = conv(k, layer.k_conv1d->weight);
    v = conv(v, layer.v_conv1d->weight);
  }
  q = swish(q).view({batch, length, heads, key});
  k = swish(k).view({batch, length, kv_heads, key});
  v = at::silu(v).view({batch, length, kv_heads, value});
  auto f = at::matmul(x, weight(layer.f_proj.weight).t()).view({batch, length, kv_heads, slots});
  auto g = at::log_sigmoid(f) / layer.options().gate_logit_normalizer;
  auto s = 1 - at::exp(g);

  auto o = at::zeros({batch, length, heads, value}, at::kDouble);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < kv_heads; ++h) {
      auto state_k = at::zeros({key, slots}, at::kDouble);
      auto state_v = at::zeros({slots, value}, at::kDouble);
      for (int64_t t = 0; t < length; ++t) {
        auto alpha = at::exp(g[b][t][h]);
        auto s_t = s[b][t][h];
        state_k = state_k * alpha.unsqueeze(0) + at::outer(k[b][t][h], s_t);
        state_v = state_v * alpha.unsqueeze(1) + at::outer(s_t, v[b][t][h]);
        for (int64_t member = 0; member < group; ++member) {
          const int64_t query_head = h * group + member;
          auto scores = layer.scale() * at::matmul(q[b][t][query_head], state_k);
          o[b][t][query_head] = at::matmul(at::softmax(scores, 0), state_v);
        }
      }
    }
  }
  auto merged = at::silu(o.reshape({batch, length, heads * value}));
  auto normed = merged * at::rsqrt(merged.square().mean(-1, true) + layer.options().norm_eps);
  if (layer.g_norm.weight.defined()) normed = normed * weight(layer.g_norm.weight);
  return at::matmul(normed, weight(layer.o_proj.weight).t());
}

struct Case {
  std::string name;
  int64_t kv_heads;
  bool short_conv;
};

const std::vector<Case> kCases = {{"mha", 4, false}, {"gqa", 2, false}, {"mqa_conv", 1, true}, {"mha_conv", 4, true}};

TEST(GatedSlotAttention, ParameterNamesAndShapes) {
  auto generator = make_generator(11);
  GatedSlotAttention layer(small_options(2, true), generator);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : layer.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"q_proj.weight", "k_proj.weight", "v_proj.weight", "f_proj.weight",
                                             "q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight",
                                             "g_norm.weight", "o_proj.weight"}));
  EXPECT_EQ(layer.q_proj.weight.sizes(), (std::vector<int64_t>{24, 24}));
  EXPECT_EQ(layer.k_proj.weight.sizes(), (std::vector<int64_t>{12, 24}));
  EXPECT_EQ(layer.v_proj.weight.sizes(), (std::vector<int64_t>{24, 24}));
  EXPECT_EQ(layer.f_proj.weight.sizes(), (std::vector<int64_t>{16, 24}));
  EXPECT_EQ(layer.o_proj.weight.sizes(), (std::vector<int64_t>{24, 48}));
  EXPECT_EQ(layer.g_norm.weight.sizes(), (std::vector<int64_t>{48}));
  EXPECT_EQ(layer.parameter_count(), GatedSlotAttention::parameter_count_for(layer.options()));
  auto no_affine = small_options(4, false);
  no_affine.elementwise_affine = false;
  GatedSlotAttention plain(no_affine, generator);
  EXPECT_EQ(plain.parameter_count(), GatedSlotAttention::parameter_count_for(no_affine));
  EXPECT_FALSE(plain.g_norm.weight.defined());
}

TEST(GatedSlotAttention, MatchesFloat64Recurrence) {
  for (const auto& c : kCases) {
    auto generator = make_generator(12);
    GatedSlotAttention layer(small_options(c.kv_heads, c.short_conv), generator);
    layer.to(at::kCPU, at::kDouble);
    auto x = at::empty({2, 19, 24}, at::kDouble).normal_(0.0, 1.0, generator);
    auto expected = layer_reference(layer, x);
    expect_close(c.name + " fp64", "y", layer.forward(x), expected, kFloat64Tolerance);
    layer.to(at::kCPU, at::kFloat);
    expect_close(c.name + " fp32", "y", layer.forward(x.to(at::kFloat)), expected, kFloat32Tolerance);
  }
}

TEST(GatedSlotAttention, ScaleOption) {
  auto generator = make_generator(13);
  auto options = small_options(2, false);
  options.scale = 0.25;
  GatedSlotAttention layer(options, generator);
  layer.to(at::kCPU, at::kDouble);
  auto x = at::empty({1, 7, 24}, at::kDouble).normal_(0.0, 1.0, generator);
  expect_close("scale 0.25", "y", layer.forward(x), layer_reference(layer, x), kFloat64Tolerance);
}

TEST(GatedSlotAttention, PrefillThenDecodeEqualsFullForward) {
  for (const auto& c : kCases) {
    for (auto dtype : {at::kDouble, at::kFloat}) {
      const std::string name = c.name + (dtype == at::kDouble ? " fp64" : " fp32");
      const double tolerance = dtype == at::kDouble ? kFloat64Tolerance : kFloat32Tolerance;
      auto generator = make_generator(14);
      GatedSlotAttention layer(small_options(c.kv_heads, c.short_conv), generator);
      layer.to(at::kCPU, dtype);
      auto x = at::empty({3, 20, 24}, dtype).normal_(0.0, 1.0, generator);
      c10::NoGradGuard no_grad;
      auto full = layer.forward(x);
      auto state = layer.make_state(3, at::kCPU, dtype);
      std::vector<at::Tensor> outputs = {layer.forward(x.narrow(1, 0, 13), &state)};
      for (int64_t t = 13; t < 20; ++t) outputs.push_back(layer.forward(x.narrow(1, t, 1), &state));
      expect_close(name, "prefill + decode", at::cat(outputs, 1), full, tolerance);
    }
  }
}

TEST(GatedSlotAttention, VarlenEqualsSeparateSequences) {
  for (bool short_conv : {false, true}) {
    auto generator = make_generator(15);
    GatedSlotAttention layer(small_options(2, short_conv), generator);
    layer.to(at::kCPU, at::kDouble);
    auto x = at::empty({1, 23, 24}, at::kDouble).normal_(0.0, 1.0, generator);
    auto cu_seqlens = at::tensor({0, 5, 6, 23}, at::kLong);
    std::vector<at::Tensor> separate;
    for (auto [begin, end] : {std::pair{0, 5}, std::pair{5, 6}, std::pair{6, 23}}) {
      separate.push_back(layer.forward(x.narrow(1, begin, end - begin)));
    }
    expect_close(short_conv ? "varlen conv" : "varlen", "y", layer.forward(x, nullptr, cu_seqlens),
                 at::cat(separate, 1), kFloat64Tolerance);
  }
}

TEST(GatedSlotAttention, GradientsReachEveryParameter) {
  auto generator = make_generator(16);
  GatedSlotAttention layer(small_options(2, true), generator);
  layer.set_requires_grad(true);
  auto x = at::empty({2, 9, 24}, at::kFloat).normal_(0.0, 1.0, generator);
  layer.forward(x).square().sum().backward();
  for (const auto& [name, tensor] : layer.named_parameters()) {
    ASSERT_TRUE(tensor.grad().defined()) << name;
    EXPECT_TRUE(tensor.grad().isfinite().all().item<bool>()) << name;
    EXPECT_GT(tensor.grad().abs().max().item<double>(), 0.0) << name;
  }
}

TEST(GatedSlotAttention, RejectsInvalidOptions) {
  auto generator = make_generator(17);
  auto message = [&](const GatedSlotAttentionOptions& options) -> std::string {
    try {
      GatedSlotAttention layer(options, generator);
    } catch (const lintime::Error& error) {
      return error.what();
    }
    return "";
  };
  auto options = small_options(4, false);
  options.feature_map = "t2r";
  EXPECT_NE(message(options).find("feature_map must be \"swish\" or \"relu\", got \"t2r\""), std::string::npos);
  options = small_options(3, false);
  EXPECT_NE(message(options).find("num_kv_heads must be positive and divide num_heads = 4, got 3"),
            std::string::npos);
  options = small_options(4, false);
  options.num_heads = 5;
  options.num_kv_heads = 5;
  EXPECT_NE(message(options).find("must be divisible by num_heads = 5"), std::string::npos);
}

TEST(GatedSlotAttention, StateBytes) {
  GatedSlotAttentionOptions options;
  options.hidden_size = 2048;
  options.num_heads = 4;
  options.num_slots = 64;
  EXPECT_EQ(GatedSlotAttention::state_bytes_per_sequence(options), 2 * 64 * 2048 * 4);
  options.num_kv_heads = 2;
  EXPECT_EQ(GatedSlotAttention::state_bytes_per_sequence(options), 64 * 2048 * 4);
  auto generator = make_generator(18);
  GatedSlotAttention layer(small_options(2, true), generator);
  auto state = layer.make_state(3, at::kCPU);
  EXPECT_EQ(state.bytes(), 3 * layer.state_bytes_per_sequence());
  EXPECT_EQ(state.state_k.sizes(), (std::vector<int64_t>{3, 2, 6, 8}));
  EXPECT_EQ(state.state_v.sizes(), (std::vector<int64_t>{3, 2, 8, 12}));
}

}  // namespace
