// Tests of the fused inference epilogues (ops/fused) on CUDA: each fused kernel against its
// reference evaluated in float64 on the same dtype-rounded inputs, next to the error of the
// reference evaluated in the dtype by ATen's own CUDA kernels (the unfused path the kernels
// replace). Held to twice that error (plus the dtype's last-bit flips: an output the two paths
// round differently is one unit apart). Inputs are row-strided views, as a joined projection's
// outputs are. Label `cuda`; without a GPU they skip.
#include "ops/fused/inference_epilogues.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace lintime::ops {
namespace {

using lintime::testing::relative_rms_error;

// One unit in the last place of the dtype, relative: the room for outputs that the fused kernel
// and ATen round to neighbouring values.
double unit(at::ScalarType dtype) { return dtype == at::kBFloat16 ? 7.8e-3 : dtype == at::kHalf ? 9.8e-4 : 1.2e-7; }

void expect_close(const at::Tensor& fused, const at::Tensor& unfused, const at::Tensor& reference,
                  const std::string& name) {
  const double error = relative_rms_error(fused.cpu().to(at::kDouble), reference.cpu().to(at::kDouble));
  const double reference_error = relative_rms_error(unfused.cpu().to(at::kDouble), reference.cpu().to(at::kDouble));
  std::printf("%-44s %.2e (ATen in dtype %.2e)\n", name.c_str(), error, reference_error);
  EXPECT_LE(error, 2 * reference_error + unit(fused.scalar_type()) / 8) << name;
  EXPECT_FALSE(fused.isnan().any().item<bool>()) << name;
}

// A [B, T, width] view into a wider row, as linear_maps' joined products give.
at::Tensor strided_rows(int64_t batch, int64_t time, int64_t width, int64_t offset, at::ScalarType dtype, double scale) {
  auto joined = (at::randn({batch, time, width + offset + 24}, at::kDouble) * scale).to(dtype).cuda();
  return joined.narrow(-1, offset, width);
}

TEST(InferenceEpiloguesCuda, MatchFloat64References) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(0);
  at::NoGradGuard no_grad;
  for (const auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    for (const auto& [batch, time] : {std::pair<int64_t, int64_t>{1, 1}, {3, 1}, {2, 37}, {128, 1}}) {
      const std::string shape = std::string(c10::toString(dtype)) + "_B" + std::to_string(batch) + "_T" +
                                std::to_string(time);
      const auto as_double = [](const at::Tensor& t) { return t.cpu().to(at::kDouble); };
      {
        const auto gate = strided_rows(batch, time, 200, 8, dtype, 2.0), up = strided_rows(batch, time, 200, 16, dtype, 1.0);
        expect_close(swiglu_product(gate, up), swiglu_product_reference(gate, up),
                     swiglu_product_reference(as_double(gate), as_double(up)), "swiglu " + shape);
      }
      for (const bool with_weight : {true, false}) {
        const auto x = strided_rows(batch, time, 520, 8, dtype, 1.0), residual = strided_rows(batch, time, 520, 0, dtype, 3.0);
        const auto weight = (at::rand({520}, at::kDouble) + 0.5).to(dtype).cuda();
        const std::optional<at::Tensor> w = with_weight ? std::optional<at::Tensor>(weight) : std::nullopt;
        const std::optional<at::Tensor> w64 = with_weight ? std::optional<at::Tensor>(as_double(weight)) : std::nullopt;
        const std::string suffix = shape + (with_weight ? "" : "_noweight");
        const auto [sum, normed] = add_rms_norm(x, residual, w, 1e-6);
        const auto [sum_aten, normed_aten] = add_rms_norm_reference(x, residual, w, 1e-6);
        // The norm's reference starts from the rounded sum (as both paths do).
        const auto [sum64, normed64] = add_rms_norm_reference(as_double(sum), at::zeros_like(as_double(sum)), w64, 1e-6);
        expect_close(sum, sum_aten, as_double(x) + as_double(residual), "add_rms_norm sum " + suffix);
        expect_close(normed, normed_aten, normed64, "add_rms_norm norm " + suffix);
        const auto y = silu_rms_norm(x, w, 1e-5);
        const auto y_aten = silu_rms_norm_reference(x, w, 1e-5);
        const auto silu_rounded = at::silu(x).cpu().to(at::kDouble);  // the rounded silu both paths start from
        expect_close(y, y_aten, silu_rms_norm_reference(silu_rounded, std::nullopt, 1e-5) *
                                    (with_weight ? as_double(weight) : at::ones({520}, at::kDouble)),
                     "silu_rms_norm " + suffix);
      }
      {
        const auto q = strided_rows(batch, time, 256, 0, dtype, 1.0), k = strided_rows(batch, time, 128, 8, dtype, 1.0);
        const auto v = strided_rows(batch, time, 136, 16, dtype, 1.0), f = strided_rows(batch, time, 64, 8, dtype, 4.0);
        const auto fused = gsa_activations(q, k, v, f, 8.0);
        const auto aten = gsa_activations_reference(q, k, v, f, 8.0);
        const auto exact = gsa_activations_reference(as_double(q), as_double(k), as_double(v), as_double(f), 8.0);
        expect_close(fused.q, aten.q, exact.q, "gsa_activations q " + shape);
        expect_close(fused.k, aten.k, exact.k, "gsa_activations k " + shape);
        expect_close(fused.v, aten.v, exact.v, "gsa_activations v " + shape);
        expect_close(fused.g, aten.g, exact.g, "gsa_activations g " + shape);
        expect_close(fused.s, aten.s, exact.s, "gsa_activations s " + shape);
        EXPECT_TRUE(fused.q.is_contiguous() && fused.s.is_contiguous() && fused.g.is_contiguous());
      }
    }
  }
}

// With a gradient recorded the references run (the fused kernels have no backward): the
// product and both gradients equal their float64 formulas to float32's rounding (elementwise,
// a few units of 2^-24; bound 1e-5 relative to the largest value, as the CPU test's float32 case).
TEST(InferenceEpiloguesCuda, GradientsTakeTheReferences) {
  LINTIME_SKIP_WITHOUT_CUDA();
  auto gate = at::randn({2, 3, 64}, at::kCUDA).requires_grad_(true);
  auto up = at::randn({2, 3, 64}, at::kCUDA).requires_grad_(true);
  const auto out = swiglu_product(gate, up);
  ASSERT_TRUE(out.requires_grad());
  const auto g64 = gate.detach().cpu().to(at::kDouble), u64 = up.detach().cpu().to(at::kDouble);
  const auto s = at::sigmoid(g64);
  lintime::testing::expect_close("swiglu with grad", "out", out, g64 * s * u64, 1e-5);
  out.sum().backward();
  lintime::testing::expect_close("swiglu", "d gate", gate.grad(), u64 * s * (1 + g64 * (1 - s)), 1e-5);
  lintime::testing::expect_close("swiglu", "d up", up.grad(), g64 * s, 1e-5);
}

}  // namespace
}  // namespace lintime::ops
