// Tests of the fused short convolution (ops/conv/cuda) through the dispatcher: the forward with
// its states, the training path (the fused backward: gradients of x, weight and bias) and the
// in-place step, against torch's depthwise conv1d in float64 on the same dtype-rounded inputs,
// next to that reference evaluated in the dtype on the GPU. Held to twice its error or the
// dtype's rounding (the unit roundoff in bf16 and fp16, 4 of them in fp32), the larger; final states exactly (they are
// copies of inputs). Label `cuda`.
#include "ops/register/ops.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

namespace lintime::ops {
namespace {

using lintime::testing::relative_rms_error;

// Where the ATen path in the dtype keeps intermediates the fused kernel rounds: one rounding of
// each output in 16-bit dtypes; in fp32, up to 4 (a width-4 dot product, the bias and silu;
// measured up to 1.4e-7, 2.4 roundings, on the H200 at 456eae1).
double rounding(at::ScalarType dtype) {
  return dtype == at::kFloat ? 4 * lintime::testing::unit_roundoff(dtype) : lintime::testing::unit_roundoff(dtype);
}

void expect_within(const std::string& name, const at::Tensor& fused, const at::Tensor& unfused,
                   const at::Tensor& reference) {
  const double error = relative_rms_error(fused.cpu().to(at::kDouble), reference);
  const double reference_error = relative_rms_error(unfused.cpu().to(at::kDouble), reference);
  std::printf("%-40s %.2e (ATen in dtype %.2e)\n", name.c_str(), error, reference_error);
  EXPECT_LE(error, std::max(2 * reference_error, rounding(fused.scalar_type()))) << name;
}

struct Case {
  int64_t batch, time, channels, width;
};

TEST(ShortConvolutionCuda, ForwardStepAndGradientsMatchFloat64) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(0);
  for (const Case& c : {Case{1, 1, 5, 3}, Case{2, 2, 64, 4}, Case{2, 63, 200, 3}, Case{1, 200, 64, 2}, Case{3, 70, 33, 5}}) {
    for (const auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
      for (const bool silu : {true, false}) {
        const std::string name = "B" + std::to_string(c.batch) + "_T" + std::to_string(c.time) + "_D" +
                                 std::to_string(c.channels) + "_W" + std::to_string(c.width) + "_" +
                                 c10::toString(dtype) + (silu ? "_silu" : "");
        auto rounded = [&](const at::Tensor& t) { return t.to(dtype).to(at::kDouble); };
        const auto x = rounded(at::randn({c.batch, c.time, c.channels}, at::kDouble));
        const auto weight = rounded(at::randn({c.channels, 1, c.width}, at::kDouble) / 2);
        const auto bias = rounded(at::randn({c.channels}, at::kDouble) / 4);
        const auto initial = rounded(at::randn({c.batch, c.width - 1, c.channels}, at::kDouble));
        auto on_gpu = [&](const at::Tensor& t) { return t.to(dtype).cuda(); };
        {  // forward with both states (no gradient)
          at::NoGradGuard no_grad;
          const auto [y_ref, state_ref] = short_convolution_reference(x, weight, bias, silu, initial, true);
          { auto poison = at::full({4 * c.batch * c.time * c.channels + 4096}, NAN, at::device(at::kCUDA)); }
          const auto [y, state] = short_convolution(on_gpu(x), on_gpu(weight), on_gpu(bias), silu, on_gpu(initial), true);
          const auto y_dtype =
              std::get<0>(short_convolution_reference(on_gpu(x), on_gpu(weight), on_gpu(bias), silu, on_gpu(initial)));
          expect_within(name + " y", y, y_dtype, y_ref);
          EXPECT_TRUE(at::equal(state.cpu(), state_ref.to(dtype))) << name << ": the final state is the last inputs";
          // One step from the initial state against the reference on [state, x_0].
          at::Tensor state_gpu = on_gpu(initial);
          const auto y_step = short_convolution_step_(on_gpu(x).select(1, 0).contiguous(), on_gpu(weight), on_gpu(bias),
                                                      silu, state_gpu);
          const auto [y0_ref, state0_ref] =
              short_convolution_reference(x.narrow(1, 0, 1), weight, bias, silu, initial, true);
          const auto y0_dtype = std::get<0>(short_convolution_reference(on_gpu(x).narrow(1, 0, 1), on_gpu(weight),
                                                                        on_gpu(bias), silu, on_gpu(initial)));
          expect_within(name + " step", y_step, y0_dtype.select(1, 0), y0_ref.select(1, 0));
          EXPECT_TRUE(at::equal(state_gpu.cpu(), state0_ref.to(dtype))) << name << ": the step's state";
        }
        // Training: the fused backward against float64 autograd (no initial state).
        auto gradients = [&](const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& b0, bool reference) {
          auto xg = x0.detach().requires_grad_(true), wg = w0.detach().requires_grad_(true);
          auto bg = b0.detach().requires_grad_(true);
          const auto y = std::get<0>(reference ? short_convolution_reference(xg, wg, bg, silu, std::nullopt, false)
                                               : short_convolution(xg, wg, bg, silu, std::nullopt, false));
          if (x0.is_cuda() && !reference) {
            EXPECT_NE(y.grad_fn()->name().find("ShortConvolutionFused"), std::string::npos) << name;
          }
          return std::make_pair(y, std::vector<at::Tensor>{xg, wg, bg});
        };
        const auto grad_y = rounded(at::randn({c.batch, c.time, c.channels}, at::kDouble));
        auto run = [&](const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& b0, bool reference) {
          auto [y, leaves] = gradients(x0, w0, b0, reference);
          y.backward(grad_y.to(y.scalar_type()).to(y.device()));
          std::vector<at::Tensor> grads;
          for (const auto& leaf : leaves) grads.push_back(leaf.grad().cpu().to(at::kDouble));
          return grads;
        };
        const auto reference = run(x, weight, bias, true);
        const auto unfused = run(on_gpu(x), on_gpu(weight), on_gpu(bias), true);
        const auto fused = run(on_gpu(x), on_gpu(weight), on_gpu(bias), false);
        lintime::testing::expect_gradients_match(name, {"dx", "dw", "db"}, fused, reference, unfused, grad_y,
                                                 rounding(dtype));
      }
    }
  }
}

}  // namespace
}  // namespace lintime::ops
