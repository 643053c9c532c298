// The inference epilogues' references (ops/fused/inference_epilogues.h) on the CPU, where every
// call takes them: each against its formula written out in float64, in fp32 and fp64, with
// strided views as inputs, and with gradients (autograd through the references).
#include "ops/fused/inference_epilogues.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

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

TEST(InferenceEpilogues, GradientsFlowThroughTheReferences) {
  auto gate = at::randn({2, 8}, at::kDouble).requires_grad_(true);
  auto up = at::randn({2, 8}, at::kDouble).requires_grad_(true);
  swiglu_product(gate, up).sum().backward();
  const auto s = at::sigmoid(gate.detach());
  expect_close("swiglu", "d gate", gate.grad(), up.detach() * s * (1 + gate.detach() * (1 - s)), 1e-12);
  expect_close("swiglu", "d up", up.grad(), gate.detach() * s, 1e-12);
}

}  // namespace
}  // namespace lintime::ops
