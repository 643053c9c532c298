// Tests of sliding-window causal softmax attention (BASED, ops/based/sliding_window_attention.h):
// the blocked form against the float64 reference (outputs and gradients; windows of 1 key, under
// and over the 64-query block, and over T; varlen), the reference against full causal attention
// when the window covers the sequence, prefill + ring-buffer decoding against the full forward,
// and the input checks.
#include "ops/based/sliding_window_attention.h"
#include "ops/register/ops.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace lintime::ops {
namespace {

using lintime::testing::error_of;
using lintime::testing::expect_close;
using lintime::testing::make_generator;
using lintime::testing::relative_rms_error;

struct WindowCase {
  std::string name;
  int64_t batch, time, heads, head_dim, value_dim, window;
  std::vector<int64_t> sequence_lengths = {};  // varlen (batch 1) when set
};

struct WindowInputs {
  at::Tensor q, k, v, grad_o, cu_seqlens;
};

WindowInputs make_inputs(const WindowCase& c, uint64_t seed) {
  auto generator = make_generator(seed);
  const int64_t T = c.sequence_lengths.empty()
                        ? c.time
                        : std::accumulate(c.sequence_lengths.begin(), c.sequence_lengths.end(), int64_t{0});
  auto randn = [&](at::IntArrayRef shape) { return at::randn(shape, generator, at::kDouble); };
  WindowInputs in{randn({c.batch, T, c.heads, c.head_dim}), randn({c.batch, T, c.heads, c.head_dim}),
                  randn({c.batch, T, c.heads, c.value_dim}), randn({c.batch, T, c.heads, c.value_dim}), {}};
  if (!c.sequence_lengths.empty()) {
    std::vector<int64_t> offsets{0};
    for (int64_t length : c.sequence_lengths) offsets.push_back(offsets.back() + length);
    in.cu_seqlens = at::tensor(offsets, at::kLong).to(at::kInt);
  }
  return in;
}

std::optional<at::Tensor> optional(const at::Tensor& x) {
  return x.defined() ? std::optional<at::Tensor>(x) : std::nullopt;
}

// o and the gradients of Σ grad_o·o with respect to q, k, v.
std::vector<at::Tensor> run(bool reference, const WindowCase& c, const WindowInputs& in, at::ScalarType dtype) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const auto q = in.q.to(dtype).requires_grad_(true), k = in.k.to(dtype).requires_grad_(true);
  const auto v = in.v.to(dtype).requires_grad_(true);
  const auto o = reference ? sliding_window_attention_reference(q, k, v, c.window, scale, optional(in.cu_seqlens))
                           : sliding_window_attention(q, k, v, c.window, scale, optional(in.cu_seqlens));
  const auto grads = torch::autograd::grad({(o.to(at::kDouble) * in.grad_o).sum()}, {q, k, v});
  return {o.detach(), grads[0], grads[1], grads[2]};
}

uint64_t seed_of(const std::string& name) { return std::hash<std::string>{}(name) % 100000; }

std::vector<WindowCase> cases() {
  return {
      {"T1_w4", 2, 1, 2, 16, 8, 4},
      {"T63_w1", 1, 63, 2, 8, 5, 1},
      {"T130_w3", 2, 130, 1, 16, 7, 3},
      {"T200_w64", 1, 200, 2, 16, 16, 64},
      {"T200_w65", 1, 200, 2, 8, 9, 65},
      {"T150_w128", 1, 150, 1, 32, 12, 128},
      {"T100_w300_covers_all", 1, 100, 2, 16, 8, 300},
      {"varlen_5_0_140_70_w40", 1, 0, 2, 16, 6, 40, {5, 0, 140, 70}},
  };
}

const char* kTensorNames[] = {"o", "grad_q", "grad_k", "grad_v"};

TEST(SlidingWindowAttention, BlockedMatchesFloat64ReferenceWithGradients) {
  for (const auto& c : cases()) {
    const auto in = make_inputs(c, seed_of(c.name));
    const auto expected = run(true, c, in, at::kDouble), actual = run(false, c, in, at::kDouble);
    for (size_t i = 0; i < expected.size(); ++i) expect_close(c.name, kTensorNames[i], actual[i], expected[i], 1e-10);
  }
}

// fp32 inputs against the float64 reference: relative RMS within a few hundred fp32 roundings.
TEST(SlidingWindowAttention, Float32MatchesFloat64Reference) {
  for (const auto& c : cases()) {
    const auto in = make_inputs(c, seed_of(c.name));
    const auto expected = run(true, c, in, at::kDouble), actual = run(false, c, in, at::kFloat);
    EXPECT_EQ(actual[0].scalar_type(), at::kFloat);
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_LE(relative_rms_error(actual[i], expected[i]), 1e-5) << c.name << " " << kTensorNames[i];
    }
  }
}

// A window covering the whole sequence is causal attention (torch's scaled_dot_product_attention).
TEST(SlidingWindowAttention, WindowOverTheSequenceIsCausalAttention) {
  const WindowCase c{"T90_w90", 2, 90, 3, 16, 16, 90};
  const auto in = make_inputs(c, seed_of(c.name));
  const double scale = 0.25;
  const auto o = sliding_window_attention_reference(in.q, in.k, in.v, c.window, scale);
  const auto causal = at::scaled_dot_product_attention(in.q.transpose(1, 2), in.k.transpose(1, 2), in.v.transpose(1, 2),
                                                       {}, 0.0, true, scale)
                          .transpose(1, 2);
  expect_close(c.name, "o", o, causal, 1e-12);
}

// Prefill, then decode token by token through the ring buffer: equals the full forward.
TEST(SlidingWindowAttention, PrefillThenStepsEqualFullForward) {
  for (int64_t prefill : {int64_t{0}, int64_t{3}, int64_t{50}}) {
    const WindowCase c{"T80_w16", 2, 80, 2, 8, 6, 16};
    const auto in = make_inputs(c, seed_of(c.name));
    const double scale = 1.0 / std::sqrt(8.0);
    const auto full = sliding_window_attention(in.q, in.k, in.v, c.window, scale);
    auto head = [&](const at::Tensor& x) { return x.narrow(1, 0, prefill); };
    auto [key_cache, value_cache, positions] = sliding_window_cache_from_prefill(head(in.k), head(in.v), c.window);
    std::vector<at::Tensor> outputs{sliding_window_attention(head(in.q), head(in.k), head(in.v), c.window, scale)};
    for (int64_t t = prefill; t < c.time; ++t) {
      outputs.push_back(sliding_window_attention_step_(in.q.select(1, t), in.k.select(1, t), in.v.select(1, t),
                                                       c.window, scale, key_cache, value_cache, positions)
                            .unsqueeze(1));
    }
    expect_close(c.name + " prefill " + std::to_string(prefill), "o", at::cat(outputs, 1), full, 1e-12);
    EXPECT_EQ(positions[0].item<int64_t>(), c.time);
  }
}

TEST(SlidingWindowAttention, BadInputsAreNamed) {
  const auto q = at::randn({2, 5, 2, 8}), k = at::randn({2, 5, 2, 8}), v = at::randn({2, 5, 2, 4});
  EXPECT_EQ(error_of([&] { sliding_window_attention(q, k, v, 0, 1.0); }),
            "lintime::sliding_window_attention: window (keys seen per query, itself included) must be >= 1, got 0");
  EXPECT_EQ(error_of([&] { sliding_window_attention(at::randn({2, 5, 2, 6}), k, v, 4, 1.0); }),
            "lintime::sliding_window_attention: q must have shape [B, T, H, D] = [2, 5, 2, 8], got [2, 5, 2, 6]");
  EXPECT_EQ(error_of([&] { sliding_window_attention(q, k, at::randn({2, 4, 2, 4}), 4, 1.0); }),
            "lintime::sliding_window_attention: v must have shape [B, T, H, V] = [2, 5, 2, V], got [2, 4, 2, 4]");
  at::Tensor key_cache = at::zeros({2, 2, 3, 8}), value_cache = at::zeros({2, 2, 4, 4});
  at::Tensor positions = at::zeros({2}, at::kLong);
  EXPECT_EQ(error_of([&] {
              sliding_window_attention_step_(q.select(1, 0), k.select(1, 0), v.select(1, 0), 4, 1.0, key_cache,
                                             value_cache, positions);
            }),
            "lintime::sliding_window_attention_step_: key_cache must have shape [B, H, w, D] = [2, 2, 4, 8], got "
            "[2, 2, 3, 8]");
}

}  // namespace
}  // namespace lintime::ops
