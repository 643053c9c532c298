// Tests of the fused sliding-window attention forward and backward (ops/based/cuda) through the
// dispatcher:
// sliding_window_attention on CUDA bf16/fp16 inputs with head dims 64 and no gradient takes the
// kernel; its output is compared with the float64 reference on the same dtype-rounded inputs,
// next to the error of the reference evaluated in the input dtype (the ATen form on the rounded
// inputs, fp32 inside, o rounded once). Held to twice that error (FlashAttention's rule) and to
// relative RMS ≤ the dtype's unit roundoff (2^-8 bf16, 2^-11 fp16). With a gradient recorded
// the fused backward runs: dq, dk, dv against float64 autograd, held to twice the error of the
// ATen form's autograd in the dtype (or the unit roundoff, when larger). Label `cuda`; without a GPU they skip.
#include "ops/register/ops.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <string>

namespace lintime::ops {
namespace {

using lintime::testing::relative_rms_error;

TEST(SlidingWindowCuda, ForwardMatchesFloat64Reference) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(0);
  struct Case {
    int64_t batch, time, heads, window;
  };
  for (const Case& c : {Case{1, 1, 1, 1}, Case{2, 63, 2, 1}, Case{1, 64, 2, 65}, Case{2, 65, 3, 8},
                        Case{1, 200, 2, 65}, Case{1, 300, 1, 129}, Case{2, 130, 2, 1000}, Case{1, 257, 2, 64}}) {
    for (const auto dtype : {at::kBFloat16, at::kHalf}) {
      auto q = at::randn({c.batch, c.time, c.heads, 64}, at::kDouble).to(dtype).to(at::kDouble);
      auto k = at::randn({c.batch, c.time, c.heads, 64}, at::kDouble).to(dtype).to(at::kDouble);
      auto v = at::randn({c.batch, c.time, c.heads, 64}, at::kDouble).to(dtype).to(at::kDouble);
      const double scale = 0.125;
      const auto reference = sliding_window_attention_reference(q, k, v, c.window, scale);
      const auto in_dtype = sliding_window_attention(q.to(dtype), k.to(dtype), v.to(dtype), c.window, scale);
      at::NoGradGuard no_grad;
      { auto poison = at::full({c.batch * c.time * c.heads * 64 + 4096}, NAN, at::device(at::kCUDA)); }
      const auto fused = sliding_window_attention(q.to(dtype).cuda(), k.to(dtype).cuda(), v.to(dtype).cuda(),
                                                  c.window, scale);
      const double error = relative_rms_error(fused.cpu().to(at::kDouble), reference);
      const double reference_error = relative_rms_error(in_dtype.to(at::kDouble), reference);
      const std::string name = "B" + std::to_string(c.batch) + "_T" + std::to_string(c.time) + "_H" +
                               std::to_string(c.heads) + "_w" + std::to_string(c.window) + "_" + c10::toString(dtype);
      std::printf("%-28s o %.2e (reference in dtype %.2e)\n", name.c_str(), error, reference_error);
      EXPECT_LE(error, lintime::testing::unit_roundoff(dtype)) << name;  // one rounding of the output
      EXPECT_LE(error, 2 * reference_error + 1e-7) << name;
    }
  }
}

TEST(SlidingWindowCuda, FusedBackwardMatchesFloat64Gradients) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(1);
  struct Case {
    int64_t batch, time, heads, window;
  };
  for (const Case& c : {Case{1, 1, 1, 1}, Case{2, 63, 2, 1}, Case{1, 64, 2, 65}, Case{2, 65, 3, 8},
                        Case{1, 200, 2, 65}, Case{1, 300, 1, 129}, Case{2, 130, 2, 1000}, Case{1, 257, 2, 64}}) {
    for (const auto dtype : {at::kBFloat16, at::kHalf}) {
      auto rounded = [&](const at::Tensor& x) { return x.to(dtype).to(at::kDouble); };
      const auto q = rounded(at::randn({c.batch, c.time, c.heads, 64}, at::kDouble));
      const auto k = rounded(at::randn({c.batch, c.time, c.heads, 64}, at::kDouble));
      const auto v = rounded(at::randn({c.batch, c.time, c.heads, 64}, at::kDouble));
      const auto grad_o = rounded(at::randn({c.batch, c.time, c.heads, 64}, at::kDouble));
      const double scale = 0.125;
      const std::string name = "B" + std::to_string(c.batch) + "_T" + std::to_string(c.time) + "_H" +
                               std::to_string(c.heads) + "_w" + std::to_string(c.window) + "_" + c10::toString(dtype);
      auto gradients = [&](const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& v0, bool reference) {
        auto qg = q0.detach().requires_grad_(true), kg = k0.detach().requires_grad_(true);
        auto vg = v0.detach().requires_grad_(true);
        const auto o = reference ? sliding_window_attention_reference(qg, kg, vg, c.window, scale)
                                 : sliding_window_attention(qg, kg, vg, c.window, scale);
        if (o.is_cuda()) {
          EXPECT_NE(o.grad_fn()->name().find("SlidingWindowFused"), std::string::npos) << name;
        }
        o.backward(grad_o.to(o.scalar_type()).to(o.device()));
        return std::array<at::Tensor, 3>{qg.grad().cpu().to(at::kDouble), kg.grad().cpu().to(at::kDouble),
                                         vg.grad().cpu().to(at::kDouble)};
      };
      const auto reference = gradients(q, k, v, true);
      const auto in_dtype = gradients(q.to(dtype), k.to(dtype), v.to(dtype), false);
      { auto poison = at::full({4 * c.batch * c.time * c.heads * 64 + 4096}, NAN, at::device(at::kCUDA)); }
      const auto cuda = gradients(q.to(dtype).cuda(), k.to(dtype).cuda(), v.to(dtype).cuda(), false);
      lintime::testing::expect_gradients_match(name, {"dq", "dk", "dv"}, {cuda[0], cuda[1], cuda[2]},
                                               {reference[0], reference[1], reference[2]},
                                               {in_dtype[0], in_dtype[1], in_dtype[2]}, grad_o,
                                               lintime::testing::unit_roundoff(dtype));
    }
  }
}

}  // namespace
}  // namespace lintime::ops
