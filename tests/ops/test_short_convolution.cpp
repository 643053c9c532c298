// The short-convolution op (ops/conv/short_convolution.h): the shift-and-add form against torch's
// depthwise conv1d in float64 (outputs, final states and the gradients of x, weight, bias and
// the initial state), varlen equal to each sequence alone, prefill + steps equal to the full
// forward, fp32 within fp32 precision, and the input checks.
#include "ops/register/ops.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <optional>
#include <string>
#include <vector>

namespace lintime::ops {
namespace {

using lintime::testing::error_of;
using lintime::testing::expect_close;

TEST(ShortConvolution, MatchesConv1dReferenceWithGradients) {
  at::manual_seed(0);
  for (const int64_t taps : {1, 2, 3, 4}) {
    for (const int64_t length : {1, 2, 5, 70}) {
      for (const bool with_bias : {true, false}) {
        for (const bool silu : {true, false}) {
          const std::string name = "W" + std::to_string(taps) + "_T" + std::to_string(length) +
                                   (with_bias ? "_bias" : "") + (silu ? "_silu" : "");
          auto make = [&](std::vector<int64_t> shape) { return at::randn(shape, at::kDouble).requires_grad_(true); };
          auto x = make({2, length, 5}), weight = make({5, 1, taps}), bias = make({5});
          auto initial = make({2, taps - 1, 5});
          const std::optional<at::Tensor> b = with_bias ? std::optional<at::Tensor>(bias) : std::nullopt;
          auto [y, final_state] = short_convolution(x, weight, b, silu, initial, true);
          auto [y_ref, final_ref] = short_convolution_reference(x, weight, b, silu, initial, true);
          expect_close(name, "y", y, y_ref, 1e-12);
          expect_close(name, "final_state", final_state, final_ref, 1e-12);
          auto loss_weights = at::randn_like(y);
          std::vector<at::Tensor> inputs = {x, weight, initial};
          if (with_bias) inputs.push_back(bias);
          auto grads = torch::autograd::grad({(y * loss_weights).sum() + final_state.sum()}, inputs);
          auto grads_ref = torch::autograd::grad({(y_ref * loss_weights).sum() + final_ref.sum()}, inputs);
          for (size_t i = 0; i < grads.size(); ++i) {
            expect_close(name, "grad " + std::to_string(i), grads[i], grads_ref[i], 1e-12);
          }
        }
      }
    }
  }
}

TEST(ShortConvolution, VarlenEqualsEachSequenceAlone) {
  at::manual_seed(1);
  const std::vector<int64_t> lengths = {3, 0, 1, 9};
  auto x = at::randn({1, 13, 4}, at::kDouble), weight = at::randn({4, 1, 3}, at::kDouble);
  auto bias = at::randn({4}, at::kDouble), initial = at::randn({4, 2, 4}, at::kDouble);
  auto cu = at::tensor({0, 3, 3, 4, 13}, at::kInt);
  for (const bool with_states : {false, true}) {
    const auto states = with_states ? std::optional<at::Tensor>(initial) : std::nullopt;
    auto [y, final_state] = short_convolution(x, weight, bias, true, states, with_states, cu);
    auto [y_ref, final_ref] = short_convolution_reference(x, weight, bias, true, states, with_states, cu);
    expect_close("varlen", "y vs reference", y, y_ref, 1e-12);
    int64_t start = 0;
    for (size_t n = 0; n < lengths.size(); ++n) {
      const auto alone_state = with_states ? std::optional<at::Tensor>(initial.narrow(0, n, 1)) : std::nullopt;
      auto [alone, alone_final] = short_convolution(x.narrow(1, start, lengths[n]), weight, bias, true, alone_state,
                                                    with_states);
      expect_close("varlen", "sequence " + std::to_string(n), y.narrow(1, start, lengths[n]), alone, 1e-12);
      if (with_states) expect_close("varlen", "final " + std::to_string(n), final_state.narrow(0, n, 1), alone_final, 1e-12);
      start += lengths[n];
    }
  }
}

TEST(ShortConvolution, PrefillThenStepsEqualsFullForward) {
  at::manual_seed(2);
  auto x = at::randn({3, 11, 6}, at::kDouble), weight = at::randn({6, 1, 4}, at::kDouble);
  auto bias = at::randn({6}, at::kDouble);
  auto [full, unused] = short_convolution(x, weight, bias, true);
  auto [prefix, state] = short_convolution(x.narrow(1, 0, 4), weight, bias, true, std::nullopt, true);
  std::vector<at::Tensor> pieces = {prefix};
  for (int64_t t = 4; t < 11; ++t) pieces.push_back(short_convolution_step_(x.select(1, t), weight, bias, true, state).unsqueeze(1));
  expect_close("prefill + steps", "y", at::cat(pieces, 1), full, 1e-12);
  // fp32 inputs: within fp32 precision of the float64 result.
  auto [y32, unused32] = short_convolution(x.to(at::kFloat), weight.to(at::kFloat), bias.to(at::kFloat), true);
  expect_close("fp32", "y", y32, full, 1e-5);
}

TEST(ShortConvolution, ChecksNameTheTensor) {
  auto x = at::randn({2, 5, 4}), weight = at::randn({4, 1, 3});
  EXPECT_NE(error_of([&] { short_convolution(x, at::randn({3, 1, 3}), std::nullopt, false); }).find("weight"),
            std::string::npos);
  EXPECT_NE(error_of([&] { short_convolution(x, weight, at::randn({5}), false); }).find("bias"), std::string::npos);
  EXPECT_NE(error_of([&] { short_convolution(x, weight, std::nullopt, false, at::randn({2, 3, 4})); })
                .find("initial_state"),
            std::string::npos);
}

}  // namespace
}  // namespace lintime::ops
