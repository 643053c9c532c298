// The GSA paper's RetNet and HGRN2 baselines: each layer against a float64 token-by-token
// recurrence written from fla's layers (outputs and input gradients), fp32 and bf16 within
// their rounding, prefill + decode (and a prefill in two parts, sequences at different
// positions) equal to the full forward, parameter and state counts, option errors; the mixers
// through the registry at the paper's MQAR width.
#include "core/error.h"
#include "layers/hgrn2_attention.h"
#include "layers/multiscale_retention.h"
#include "models/mixer.h"
#include "state/gla_state.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace {

using lintime::layers::Hgrn2Attention;
using lintime::layers::Hgrn2Options;
using lintime::layers::MultiScaleRetention;
using lintime::layers::MultiScaleRetentionOptions;
using lintime::testing::error_of;
using lintime::testing::expect_close;
using lintime::testing::make_generator;

// fp64 chunked vs sequential summation: 1e-10 leaves room for T·K-term sums.
constexpr double kFloat64Tolerance = 1e-10;
// fp32: a few hundred ulps of the largest output over <= 24 tokens and 16-term products.
constexpr double kFloat32Tolerance = 5e-5;
// bf16 weights and activations: the input, the weights, each projection's output, the rotary
// or gate, the norm and the output projection each round once to 2^-8 relative (the recurrence
// runs in fp32): eight roundings bound what compounds (measured 0.7–1.3e-2).
const double kBfloat16Tolerance = 8 * lintime::testing::unit_roundoff(at::kBFloat16);

at::Tensor weight(const at::Tensor& w) { return w.detach().to(at::kDouble); }
at::Tensor project(const at::Tensor& x, const lintime::layers::Linear& linear) {
  return at::matmul(x, weight(linear.weight).t());
}
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x * at::rsqrt(x.square().mean(-1, true) + eps) * weight(w);
}

// S_t = diag(exp(g_t)) S_{t−1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t per head, one token at a time.
// q, k, g [B, T, H, K], v [B, T, H, V] -> o [B, T, H, V].
at::Tensor gated_recurrence(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                            double scale) {
  const int64_t batch = q.size(0), length = q.size(1), heads = q.size(2);
  at::Tensor state = at::zeros({batch, heads, q.size(3), v.size(3)}, q.options());
  std::vector<at::Tensor> outputs;
  for (int64_t t = 0; t < length; ++t) {
    state = state * g.select(1, t).exp().unsqueeze(-1) + k.select(1, t).unsqueeze(-1) * v.select(1, t).unsqueeze(-2);
    outputs.push_back(scale * (state * q.select(1, t).unsqueeze(-1)).sum(2));
  }
  return at::stack(outputs, 1);
}

// Half-split rotary at positions 0..T−1, θ_i = t · base^(−2i/D), as fla's RotaryEmbedding.
at::Tensor rotate(const at::Tensor& x, double base) {
  const int64_t length = x.size(1), half = x.size(3) / 2;
  auto options = x.options();
  auto inverse = at::pow(base, -at::arange(0, half, options) * (2.0 / static_cast<double>(x.size(3))));
  auto angles = at::outer(at::arange(0, length, options), inverse).view({1, length, 1, half});
  auto x1 = x.narrow(3, 0, half), x2 = x.narrow(3, half, half);
  return at::cat({x1 * angles.cos() - x2 * angles.sin(), x2 * angles.cos() + x1 * angles.sin()}, 3);
}

// fla's MultiScaleRetention written out in fp64 from the layer's weights.
at::Tensor retention_reference(const MultiScaleRetention& layer, const at::Tensor& x_in) {
  const auto x = x_in.to(at::kDouble);
  const auto& o = layer.options();
  const int64_t batch = x.size(0), length = x.size(1), heads = o.num_heads;
  const int64_t key = layer.head_k_dim(), value = layer.head_v_dim();
  auto q = rotate(project(x, layer.q_proj).view({batch, length, heads, key}), o.rotary_base);
  auto k = rotate(project(x, layer.k_proj).view({batch, length, heads, key}), o.rotary_base);
  auto v = project(x, layer.v_proj).view({batch, length, heads, value});
  std::vector<double> log_gamma;
  for (int64_t h = 0; h < heads; ++h) log_gamma.push_back(std::log(1.0 - std::pow(2.0, -5.0 - static_cast<double>(h))));
  auto g = at::tensor(log_gamma, x.options()).view({1, 1, heads, 1}).expand({batch, length, heads, key});
  auto out = rms_norm(gated_recurrence(q, k, v, g, 1.0 / std::sqrt(static_cast<double>(key))), layer.g_norm.weight,
                      o.norm_eps);
  if (layer.g_proj) {
    auto gate = project(x, *layer.g_proj).view({batch, length, heads, value});
    out = out * gate * at::sigmoid(gate);
  }
  return project(out.reshape({batch, length, heads * value}), layer.o_proj);
}

// fla's HGRN2Attention written out in fp64 from the layer's weights.
at::Tensor hgrn2_reference(const Hgrn2Attention& layer, const at::Tensor& x_in) {
  const auto x = x_in.to(at::kDouble);
  const int64_t batch = x.size(0), length = x.size(1), heads = layer.num_heads();
  const int64_t forget = layer.head_f_dim(), input = layer.head_i_dim();
  auto q_raw = project(x, layer.q_proj);
  auto q = (q_raw * at::sigmoid(q_raw)).view({batch, length, heads, forget});
  auto g = -at::log1p(at::exp(-project(x, layer.f_proj)));  // logsigmoid
  auto k = (1.0 - g.exp()).view({batch, length, heads, forget});
  auto v = project(x, layer.i_proj).view({batch, length, heads, input});
  auto o = gated_recurrence(q, k, v, g.view({batch, length, heads, forget}), 1.0 / std::sqrt(static_cast<double>(forget)));
  return project(rms_norm(o.reshape({batch, length, heads * input}), layer.g_norm.weight, 1e-5), layer.o_proj);
}

MultiScaleRetentionOptions retention_options(bool output_gate) {
  MultiScaleRetentionOptions options;
  options.hidden_size = 24;
  options.num_heads = 3;  // decays 1 − 2^-5, 1 − 2^-6, 1 − 2^-7
  options.use_output_gate = output_gate;
  options.initializer_range = 0.2;
  return options;
}

Hgrn2Options hgrn2_options() {
  Hgrn2Options options;
  options.hidden_size = 24;
  options.num_heads = 2;
  options.initializer_range = 0.2;
  return options;
}

TEST(MultiScaleRetention, MatchesFloat64RecurrenceWithGradients) {
  for (bool gate : {true, false}) {
    const std::string name = gate ? "retnet gated" : "retnet no gate";
    auto generator = make_generator(31);
    MultiScaleRetention layer(retention_options(gate), generator);
    layer.to(at::kCPU, at::kDouble);
    auto x = at::empty({2, 21, 24}, at::kDouble).normal_(0.0, 1.0, generator).requires_grad_(true);
    auto x_reference = x.detach().clone().requires_grad_(true);
    auto y = layer.forward(x);
    auto expected = retention_reference(layer, x_reference);
    expect_close(name + " fp64", "y", y, expected, kFloat64Tolerance);
    auto grad_y = at::empty_like(expected).normal_(0.0, 1.0, generator);
    y.backward(grad_y);
    expected.backward(grad_y);
    expect_close(name + " fp64", "dx", x.grad(), x_reference.grad(), kFloat64Tolerance);
    layer.to(at::kCPU, at::kFloat);
    c10::NoGradGuard no_grad;
    expect_close(name + " fp32", "y", layer.forward(x.detach().to(at::kFloat)), expected.detach(), kFloat32Tolerance);
    layer.to(at::kCPU, at::kBFloat16);
    expect_close(name + " bf16", "y", layer.forward(x.detach().to(at::kBFloat16)), expected.detach(), kBfloat16Tolerance);
  }
}

TEST(Hgrn2Attention, MatchesFloat64RecurrenceWithGradients) {
  auto generator = make_generator(32);
  Hgrn2Attention layer(hgrn2_options(), generator);
  layer.to(at::kCPU, at::kDouble);
  layer.set_requires_grad(true);
  auto x = at::empty({2, 23, 24}, at::kDouble).normal_(0.0, 1.0, generator).requires_grad_(true);
  auto x_reference = x.detach().clone().requires_grad_(true);
  auto y = layer.forward(x);
  auto expected = hgrn2_reference(layer, x_reference);
  expect_close("hgrn2 fp64", "y", y, expected, kFloat64Tolerance);
  auto grad_y = at::empty_like(expected).normal_(0.0, 1.0, generator);
  y.backward(grad_y);
  expected.backward(grad_y);
  expect_close("hgrn2 fp64", "dx", x.grad(), x_reference.grad(), kFloat64Tolerance);
  // Every parameter is reached.
  for (const auto& [name, parameter] : layer.named_parameters()) {
    EXPECT_TRUE(parameter.grad().defined() && parameter.grad().abs().sum().item<double>() > 0) << name;
  }
  layer.to(at::kCPU, at::kFloat);
  c10::NoGradGuard no_grad;
  expect_close("hgrn2 fp32", "y", layer.forward(x.detach().to(at::kFloat)), expected.detach(), kFloat32Tolerance);
  layer.to(at::kCPU, at::kBFloat16);
  expect_close("hgrn2 bf16", "y", layer.forward(x.detach().to(at::kBFloat16)), expected.detach(), kBfloat16Tolerance);
}

// Prefill 9 tokens, then 4 more as a second prefill, then one token at a time, through the
// mixer interface (as the decoder and the server drive it); plus two sequences decoded
// together after prefills of different lengths (each keeps its own position).
void expect_decoding_equals_forward(const std::string& mixer, const nlohmann::json& options) {
  auto generator = make_generator(33);
  auto layer = lintime::models::make_mixer(mixer, 24, options, generator, 0.2);
  layer->module().to(at::kCPU, at::kDouble);
  auto x = at::empty({2, 20, 24}, at::kDouble).normal_(0.0, 1.0, generator);
  c10::NoGradGuard no_grad;
  const at::Tensor full = layer->forward(x);
  auto state = layer->make_state(2, at::kCPU, at::kDouble);
  std::vector<at::Tensor> outputs = {layer->forward(x.narrow(1, 0, 9), state.get()),
                                     layer->forward(x.narrow(1, 9, 4), state.get())};
  for (int64_t t = 13; t < 20; ++t) outputs.push_back(layer->forward(x.narrow(1, t, 1), state.get()));
  expect_close(mixer, "prefill + prefill + decode", at::cat(outputs, 1), full, kFloat64Tolerance);

  // Sequence 0 prefilled with 11 tokens, sequence 1 with 6, then both step together.
  auto first = layer->make_state(1, at::kCPU, at::kDouble), second = layer->make_state(1, at::kCPU, at::kDouble);
  layer->forward(x.narrow(0, 0, 1).narrow(1, 0, 11), first.get());
  layer->forward(x.narrow(0, 1, 1).narrow(1, 0, 6), second.get());
  auto joint = layer->make_state(2, at::kCPU, at::kDouble);
  auto first_tensors = first->tensors(), second_tensors = second->tensors(), joint_tensors = joint->tensors();
  for (size_t i = 0; i < joint_tensors.size(); ++i) {
    *joint_tensors[i] = at::cat({*first_tensors[i], *second_tensors[i]}, 0);
  }
  const at::Tensor step = at::stack({x.select(0, 0).select(0, 11), x.select(0, 1).select(0, 6)}, 0).unsqueeze(1);
  const at::Tensor stepped = layer->forward(step, joint.get());
  expect_close(mixer, "sequence 0 at position 11", stepped.select(0, 0), full.select(0, 0).narrow(0, 11, 1),
               kFloat64Tolerance);
  auto alone = layer->forward(x.narrow(0, 1, 1).narrow(1, 0, 7));
  expect_close(mixer, "sequence 1 at position 6", stepped.select(0, 1), alone.select(0, 0).narrow(0, 6, 1),
               kFloat64Tolerance);
}

TEST(MultiScaleRetention, DecodingEqualsFullForward) {
  expect_decoding_equals_forward("retnet", {{"num_heads", 3}});
}

TEST(Hgrn2Attention, DecodingEqualsFullForward) { expect_decoding_equals_forward("hgrn2", {{"num_heads", 2}}); }

TEST(MultiScaleRetention, ParameterNamesCountsAndStateAtThePapersWidth) {
  auto generator = make_generator(34);
  MultiScaleRetentionOptions options;
  options.hidden_size = 128;  // the GSA paper's MQAR d 128: 2 heads, K 64, V 128
  MultiScaleRetention layer(options, generator);
  std::vector<std::string> names;
  for (const auto& [name, parameter] : layer.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"q_proj.weight", "k_proj.weight", "v_proj.weight", "g_proj.weight",
                                             "g_norm_swish_gate.weight", "o_proj.weight"}));
  // q, k 128·128; v, g 128·256; norm 128; o 256·128.
  const int64_t expected = 2 * 128 * 128 + 2 * 128 * 256 + 128 + 256 * 128;
  EXPECT_EQ(layer.parameter_count(), expected);
  EXPECT_EQ(lintime::models::mixer_parameter_count("retnet", 128, nlohmann::json::object()), expected);
  EXPECT_EQ(lintime::models::mixer_state_bytes_per_sequence("retnet", 128, nlohmann::json::object()), 2 * 64 * 128 * 4);
  auto decays = layer.log_decays(at::TensorOptions().dtype(at::kDouble)).exp();
  EXPECT_DOUBLE_EQ(decays[0].item<double>(), 1.0 - 1.0 / 32);
  EXPECT_DOUBLE_EQ(decays[1].item<double>(), 1.0 - 1.0 / 64);
}

TEST(Hgrn2Attention, ParameterNamesCountsAndStateAtThePapersWidth) {
  auto generator = make_generator(35);
  Hgrn2Options options;
  options.hidden_size = 128;  // 2 heads: forget and input head dims 64
  Hgrn2Attention layer(options, generator);
  std::vector<std::string> names;
  for (const auto& [name, parameter] : layer.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"q_proj.weight", "f_proj.weight", "i_proj.weight", "g_norm.weight",
                                             "o_proj.weight"}));
  EXPECT_EQ(layer.parameter_count(), 4 * 128 * 128 + 128);
  EXPECT_EQ(lintime::models::mixer_parameter_count("hgrn2", 128, nlohmann::json::object()), 4 * 128 * 128 + 128);
  EXPECT_EQ(lintime::models::mixer_state_bytes_per_sequence("hgrn2", 128, nlohmann::json::object()), 2 * 64 * 64 * 4);
  // fla's expand_ratio: 32 → 4 heads of forget dim 32 and input dim 32.
  EXPECT_EQ(lintime::models::mixer_state_bytes_per_sequence("hgrn2", 128, {{"expand_ratio", 32}}), 4 * 32 * 32 * 4);
}

TEST(MultiScaleRetention, RejectsInvalidOptions) {
  auto generator = make_generator(36);
  auto options = retention_options(true);
  options.num_heads = 5;
  EXPECT_EQ(error_of([&] { MultiScaleRetention(options, generator); }),
            "MultiScaleRetention: key_dim = hidden_size * expand_k = 24 must be a positive multiple of num_heads = 5");
  options = retention_options(true);
  options.num_heads = 8;  // head_k_dim 3
  EXPECT_EQ(error_of([&] { MultiScaleRetention(options, generator); }),
            "MultiScaleRetention: head_k_dim = 3 must be even (the rotary embedding pairs its halves)");
  EXPECT_NE(error_of([&] { lintime::models::make_mixer("retnet", 24, {{"heads", 2}}, generator); })
                .find("config key \"model.retnet.heads\": unknown"),
            std::string::npos);
  MultiScaleRetention layer(retention_options(true), generator);
  EXPECT_EQ(error_of([&] { layer.forward(at::zeros({1, 3, 16})); }),
            "MultiScaleRetention: x must have shape [B, T, hidden_size] = [B, T, 24], got [1, 3, 16]");
}

TEST(Hgrn2Attention, RejectsInvalidOptions) {
  auto generator = make_generator(37);
  auto options = hgrn2_options();
  options.num_heads = 5;
  EXPECT_EQ(error_of([&] { Hgrn2Attention(options, generator); }),
            "Hgrn2Attention: num_heads must divide hidden_size = 24, got 5");
  options = hgrn2_options();
  options.expand_ratio = 7;
  EXPECT_EQ(error_of([&] { Hgrn2Attention(options, generator); }),
            "Hgrn2Attention: expand_ratio must divide hidden_size = 24, got 7");
  EXPECT_EQ(error_of([&] { lintime::models::make_mixer("hgrn2", 24, {{"num_heads", 2}, {"expand_ratio", 12}}, generator); }),
            "config key \"model.hgrn2\": give num_heads or expand_ratio (num_heads = d_model / expand_ratio), not both");
}

}  // namespace
