// The inference epilogues' references (ops/fused/inference_epilogues.h) on the CPU, where every
// call takes them: each against its formula written out in float64, in fp32 and fp64, with
// strided views as inputs. The SwiGLU product's own autograd function: its forward equals the
// reference bit for bit, its gradients follow their float64 formulas (and finite differences in
// fp64), and its graph keeps gate and up alone (counted by a wrapper of ATen's CPU allocator).
#include "ops/fused/inference_epilogues.h"
#include "support/cpu_allocation_counter.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace lintime::ops {
namespace {

using lintime::testing::expect_close;

at::Tensor silu64(const at::Tensor& x) { return x / (1 + at::exp(-x)); }

at::Tensor rms_norm64(const at::Tensor& y, const at::Tensor& weight, double eps) {
  return y / at::sqrt(y.square().mean(-1, true) + eps) * weight;
}

TEST(InferenceEpilogues, ReferencesFollowTheirFormulas) {
  at::manual_seed(0);
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const double tolerance = dtype == at::kFloat ? 2e-6 : 1e-12;
    const std::string name = c10::toString(dtype);
    const auto joined = at::randn({2, 5, 96}, at::kDouble).to(dtype);  // row-strided views of one product
    const auto gate = joined.narrow(-1, 0, 40), up = joined.narrow(-1, 40, 40);
    expect_close(name, "swiglu", swiglu_product(gate, up), silu64(gate.to(at::kDouble)) * up.to(at::kDouble),
                 tolerance);

    const auto x = at::randn({3, 4, 24}, at::kDouble).to(dtype), residual = at::randn({3, 4, 24}, at::kDouble).to(dtype);
    const auto weight = (at::rand({24}, at::kDouble) + 0.5).to(dtype);
    const auto [sum, normed] = add_rms_norm(x, residual, weight, 1e-6);
    const auto sum64 = x.to(at::kDouble) + residual.to(at::kDouble);
    expect_close(name, "add_rms_norm sum", sum, sum64, tolerance);
    expect_close(name, "add_rms_norm norm", normed, rms_norm64(sum.to(at::kDouble), weight.to(at::kDouble), 1e-6),
                 tolerance);
    expect_close(name, "silu_rms_norm", silu_rms_norm(x, std::nullopt, 1e-5),
                 rms_norm64(silu64(x.to(at::kDouble)), at::ones({24}, at::kDouble), 1e-5), tolerance);

    const auto projections = at::randn({2, 3, 64}, at::kDouble).to(dtype);
    const auto q = projections.narrow(-1, 0, 16), k = projections.narrow(-1, 16, 16);
    const auto v = projections.narrow(-1, 32, 24), f = projections.narrow(-1, 56, 8) * 3;
    const auto activations = gsa_activations(q, k, v, f, 8.0);
    expect_close(name, "q", activations.q, silu64(q.to(at::kDouble)), tolerance);
    expect_close(name, "k", activations.k, silu64(k.to(at::kDouble)), tolerance);
    expect_close(name, "v", activations.v, silu64(v.to(at::kDouble)), tolerance);
    const auto g64 = -at::log1p(at::exp(-f.to(at::kDouble))) / 8.0;  // log σ(f) / 8
    expect_close(name, "g", activations.g, g64, tolerance);
    expect_close(name, "s", activations.s, 1 - at::exp(g64), tolerance);
  }
}

// d gate, d up of out = silu(gate) · up for the upstream gradient dout, in float64.
std::pair<at::Tensor, at::Tensor> swiglu_gradients64(const at::Tensor& gate, const at::Tensor& up,
                                                     const at::Tensor& dout) {
  const auto g = gate.to(at::kDouble), u = up.to(at::kDouble), d = dout.to(at::kDouble);
  const auto s = at::sigmoid(g);
  return {d * u * s * (1 + g * (1 - s)), d * g * s};
}

// The product and both gradients, taken through autograd, of row-strided views of one joined
// tensor (as linear_maps gives them) of the given shape's rows and intermediate width.
struct SwigluRun {
  at::Tensor gate, up, dout, out, grad_gate, grad_up;
};
SwigluRun run_swiglu(std::vector<int64_t> rows, int64_t width, at::ScalarType dtype, double scale) {
  SwigluRun run;
  std::vector<int64_t> joined_shape = rows, shape = rows;
  joined_shape.push_back(2 * width + 3);
  shape.push_back(width);
  const auto joined = (at::randn(joined_shape, at::kDouble) * scale).to(dtype).requires_grad_(true);
  run.gate = joined.narrow(-1, 0, width);
  run.up = joined.narrow(-1, width + 3, width);
  run.dout = at::randn(shape, at::kDouble).to(dtype);
  run.out = swiglu_product(run.gate, run.up);
  const auto grads = torch::autograd::grad({run.out}, {run.gate, run.up}, {run.dout});
  run.grad_gate = grads[0];
  run.grad_up = grads[1];
  return run;
}

// Each value is computed in fp32 with at most ~8 roundings (exp within an ulp), so it lies within
// 16 units of fp32's roundoff of its float64 value, relative to the largest; fp64 likewise, far
// below 1e-12; a 16-bit dtype adds the one final rounding, at most its unit roundoff.
double swiglu_tolerance(at::ScalarType dtype) {
  using lintime::testing::unit_roundoff;
  if (dtype == at::kDouble) return 1e-12;
  if (dtype == at::kFloat) return 16 * unit_roundoff(at::kFloat);
  return unit_roundoff(dtype) + 16 * unit_roundoff(at::kFloat);
}

TEST(SwigluProduct, ForwardIsTheReferenceAndGradientsFollowTheirFormulas) {
  at::manual_seed(1);
  for (const auto dtype : {at::kDouble, at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const auto& [rows, width] : {std::pair<std::vector<int64_t>, int64_t>{{1}, 1},
                                      {{63}, 100},
                                      {{2, 5}, 37},
                                      {{3, 1025}, 24},
                                      {{2, 1500}, 100}}) {  // 3e5 entries: the CPU backward's two slices
      const std::string name = std::string(c10::toString(dtype)) + "_rows" + std::to_string(rows.back()) + "_I" +
                               std::to_string(width);
      const SwigluRun run = run_swiglu(rows, width, dtype, 3.0);
      ASSERT_EQ(run.out.scalar_type(), dtype) << name;
      ASSERT_EQ(run.grad_gate.scalar_type(), dtype) << name;
      ASSERT_EQ(run.grad_up.scalar_type(), dtype) << name;
      EXPECT_TRUE(at::equal(run.out, swiglu_product_reference(run.gate.detach(), run.up.detach()))) << name;
      const double tolerance = swiglu_tolerance(dtype);
      const auto g64 = run.gate.detach().to(at::kDouble), u64 = run.up.detach().to(at::kDouble);
      const auto [grad_gate64, grad_up64] = swiglu_gradients64(g64, u64, run.dout);
      expect_close(name, "out", run.out, silu64(g64) * u64, tolerance);
      expect_close(name, "d gate", run.grad_gate, grad_gate64, tolerance);
      expect_close(name, "d up", run.grad_up, grad_up64, tolerance);
    }
  }
}

TEST(SwigluProduct, BackwardEqualsAutogradThroughTheReferenceInFloat64) {
  at::manual_seed(2);
  const auto gate = (at::randn({4, 33}, at::kDouble) * 4).requires_grad_(true);
  const auto up = at::randn({4, 33}, at::kDouble).requires_grad_(true);
  const auto dout = at::randn({4, 33}, at::kDouble);
  const auto reference = torch::autograd::grad({swiglu_product_reference(gate, up)}, {gate, up}, {dout});
  const auto [grad_gate, grad_up] = swiglu_product_bwd(gate.detach(), up.detach(), dout);
  expect_close("fp64", "d gate", grad_gate, reference[0], 1e-12);
  expect_close("fp64", "d up", grad_up, reference[1], 1e-12);
}

// Central differences in fp64 (h = 1e-6: truncation O(h²) ≈ 1e-12, rounding ≈ 1e-16 / h): along random
// directions of (gate, up) jointly, Σ dout · out changes by ⟨d gate, v⟩ + ⟨d up, w⟩; and, the
// product being elementwise, shifting every entry of gate (or up) at once by h gives each partial.
TEST(SwigluProduct, GradientsMatchFiniteDifferencesInFloat64) {
  at::manual_seed(3);
  const double h = 1e-6;
  const auto gate = (at::randn({5, 41}, at::kDouble) * 3).requires_grad_(true);
  const auto up = at::randn({5, 41}, at::kDouble).requires_grad_(true);
  const auto dout = at::randn({5, 41}, at::kDouble);
  const auto grads = torch::autograd::grad({swiglu_product(gate, up)}, {gate, up}, {dout});
  at::NoGradGuard no_grad;
  const auto loss = [&](const at::Tensor& g, const at::Tensor& u) {
    return (swiglu_product(g, u) * dout).sum().item<double>();
  };
  for (int direction = 0; direction < 4; ++direction) {
    const auto v = at::randn_like(gate), w = at::randn_like(up);
    const double numeric = (loss(gate + h * v, up + h * w) - loss(gate - h * v, up - h * w)) / (2 * h);
    const double analytic = ((grads[0] * v).sum() + (grads[1] * w).sum()).item<double>();
    EXPECT_NEAR(numeric, analytic, 1e-7 * std::max(1.0, std::abs(analytic))) << "direction " << direction;
  }
  const auto partial_gate = (swiglu_product(gate + h, up) - swiglu_product(gate - h, up)) / (2 * h) * dout;
  const auto partial_up = (swiglu_product(gate, up + h) - swiglu_product(gate, up - h)) / (2 * h) * dout;
  expect_close("finite differences", "d gate", grads[0], partial_gate, 1e-8);
  expect_close("finite differences", "d up", grads[1], partial_up, 1e-8);
}

// The graph keeps gate and up themselves: forward allocates its output and nothing more that
// lives on (autograd through the reference keeps three fp32 [rows, I] tensors besides); after
// backward only the two gradients remain, in the inputs' dtype, and while it ran its
// temporaries (slices of rows) stayed below one fp32 copy of [rows, I] (unsliced: about four).
TEST(SwigluProduct, GraphKeepsGateAndUpInTheirDtypeOnly) {
  using lintime::testing::CpuAllocationCounter;
  at::manual_seed(4);
  for (const auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const std::string name = c10::toString(dtype);
    const int64_t rows = 8192, width = 256;
    const auto joined = at::randn({rows, 2 * width}, at::kDouble).to(dtype).requires_grad_(true);
    const auto gate = joined.narrow(-1, 0, width), up = joined.narrow(-1, width, width);
    const auto dout = at::randn({rows, width}, at::kDouble).to(dtype);
    const int64_t fp32_bytes = rows * width * 4;

    int64_t reference_held = 0;
    {
      CpuAllocationCounter counter;
      const auto out = swiglu_product_reference(gate, up);
      reference_held = counter.live_bytes() - static_cast<int64_t>(out.nbytes());
    }
    CpuAllocationCounter counter;
    const auto out = swiglu_product(gate, up);
    ASSERT_TRUE(out.requires_grad()) << name;
    const int64_t held = counter.live_bytes() - static_cast<int64_t>(out.nbytes());
    std::printf("%-10s graph holds %ld bytes beyond the output (autograd through the reference: %ld)\n",
                name.c_str(), static_cast<long>(held), static_cast<long>(reference_held));
    EXPECT_EQ(held, 0) << name;
    // The reference's graph keeps silu's fp32 output, and fp32 copies of gate and up unless
    // they are fp32 already (then it keeps them).
    EXPECT_EQ(reference_held, dtype == at::kFloat ? fp32_bytes : 3 * fp32_bytes) << name;

    counter.reset();
    const auto grads = torch::autograd::grad({out}, {gate, up}, {dout});
    const int64_t backward_live = counter.live_bytes(), backward_peak = counter.peak_bytes();
    std::printf("%-10s backward: %ld bytes live after it (the two gradients), peak %ld (%.2f fp32 [rows, I])\n",
                name.c_str(), static_cast<long>(backward_live), static_cast<long>(backward_peak),
                static_cast<double>(backward_peak) / static_cast<double>(fp32_bytes));
    const auto gradient_bytes = static_cast<int64_t>(grads[0].nbytes() + grads[1].nbytes());
    EXPECT_EQ(backward_live, gradient_bytes) << name;
    EXPECT_LE(backward_peak - gradient_bytes, fp32_bytes) << name;
  }
}

// The backward's product (swiglu_linear reads it for the weight's gradient) is the forward's,
// bit for bit, in every dtype; without with_product none is made.
TEST(SwigluProduct, BackwardWritesTheForwardsProductWhenAsked) {
  at::manual_seed(5);
  for (const auto dtype : {at::kDouble, at::kFloat, at::kBFloat16, at::kHalf}) {
    const auto joined = (at::randn({2, 700, 2 * 96 + 5}, at::kDouble) * 3).to(dtype);
    const auto gate = joined.narrow(-1, 0, 96), up = joined.narrow(-1, 101, 96);
    const auto dout = at::randn({2, 700, 96}, at::kDouble).to(dtype);
    const auto with = swiglu_product_bwd_with_product(gate, up, dout, true);
    const auto without = swiglu_product_bwd_with_product(gate, up, dout, false);
    EXPECT_TRUE(at::equal(with.product, swiglu_product(gate, up))) << c10::toString(dtype);
    EXPECT_FALSE(without.product.defined()) << c10::toString(dtype);
    EXPECT_TRUE(at::equal(with.grad_gate, without.grad_gate) && at::equal(with.grad_up, without.grad_up))
        << c10::toString(dtype);
  }
}

// swiglu_linear in float64: the output and the gradients of gate, up, weight and bias equal
// autograd through linear(silu(gate) · up) to 1e-12, with and without a bias, for row-strided
// gate and up (views of one joined product, as the MLP's) and a leading batch dim.
TEST(SwigluLinear, EqualsAutogradThroughTheReferenceInFloat64) {
  at::manual_seed(6);
  for (const bool with_bias : {false, true}) {
    const auto joined = (at::randn({3, 11, 2 * 40 + 3}, at::kDouble) * 2).requires_grad_(true);
    const auto gate = joined.narrow(-1, 0, 40), up = joined.narrow(-1, 43, 40);
    const auto weight = (at::randn({24, 40}, at::kDouble) * 0.2).requires_grad_(true);
    const auto bias = at::randn({24}, at::kDouble).requires_grad_(true);
    const std::optional<at::Tensor> b = with_bias ? std::optional<at::Tensor>(bias) : std::nullopt;
    const auto dy = at::randn({3, 11, 24}, at::kDouble);
    const auto y = swiglu_linear(gate, up, weight, b);
    const auto y_reference = swiglu_linear_reference(gate, up, weight, b);
    const std::string name = with_bias ? "bias" : "no bias";
    expect_close(name, "y", y, y_reference, 1e-12);
    std::vector<at::Tensor> inputs = {joined, weight};
    if (with_bias) inputs.push_back(bias);
    const auto grads = torch::autograd::grad({y}, inputs, {dy});
    const auto reference = torch::autograd::grad({y_reference}, inputs, {dy});
    expect_close(name, "d joined (gate, up)", grads[0], reference[0], 1e-12);
    expect_close(name, "d weight", grads[1], reference[1], 1e-12);
    if (with_bias) expect_close(name, "d bias", grads[2], reference[2], 1e-12);
  }
}

// The graph keeps gate and up, not the [rows, I] product the projection reads: after the
// forward only the output is new (autograd through the reference also keeps the product, and
// its fp32 temporaries); after the backward only the gradients remain.
TEST(SwigluLinear, GraphDoesNotKeepTheProduct) {
  using lintime::testing::CpuAllocationCounter;
  at::manual_seed(7);
  const int64_t rows = 4096, width = 256, out_width = 64;
  const auto joined = at::randn({rows, 2 * width}, at::kDouble).to(at::kBFloat16).requires_grad_(true);
  const auto gate = joined.narrow(-1, 0, width), up = joined.narrow(-1, width, width);
  const auto weight = (at::randn({out_width, width}, at::kDouble) * 0.1).to(at::kBFloat16).requires_grad_(true);
  const auto dy = at::randn({rows, out_width}, at::kDouble).to(at::kBFloat16);
  const int64_t product_bytes = rows * width * 2;
  int64_t reference_held = 0;
  {
    CpuAllocationCounter counter;
    const auto y = swiglu_linear_reference(gate, up, weight, std::nullopt);
    reference_held = counter.live_bytes() - static_cast<int64_t>(y.nbytes());
  }
  CpuAllocationCounter counter;
  const auto y = swiglu_linear(gate, up, weight, std::nullopt);
  ASSERT_TRUE(y.requires_grad());
  const int64_t held = counter.live_bytes() - static_cast<int64_t>(y.nbytes());
  std::printf("swiglu_linear graph holds %ld bytes beyond the output (through the reference: %ld)\n",
              static_cast<long>(held), static_cast<long>(reference_held));
  EXPECT_EQ(held, 0);
  EXPECT_GE(reference_held, product_bytes);
  counter.reset();
  const auto grads = torch::autograd::grad({y}, {joined, weight}, {dy});
  EXPECT_EQ(counter.live_bytes(), static_cast<int64_t>(grads[0].nbytes() + grads[1].nbytes()));
}
}  // namespace
}  // namespace lintime::ops
