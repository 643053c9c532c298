// Tests of the fused inference epilogues (ops/fused) on CUDA: each fused kernel against its
// reference evaluated in float64 on the same dtype-rounded inputs, next to the error of the
// reference evaluated in the dtype by ATen's own CUDA kernels (the unfused path the kernels
// replace). Held to twice that error (plus the dtype's last-bit flips: an output the two paths
// round differently is one unit apart). Inputs are row-strided views, as a joined projection's
// outputs are. The SwiGLU product's autograd function: the fused forward under autograd, both
// gradients against their float64 formulas, and the device bytes its graph and backward take.
// Label `cuda`; without a GPU they skip.
#include "ops/fused/inference_epilogues.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <ATen/DeviceAccelerator.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

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

// Bytes the device's caching allocator hands out now, and their peak since the last reset (as
// requested, not rounded to its blocks). Through at::accelerator: the file links no CUDA library.
int64_t device_requested_bytes(c10::DeviceIndex device) {
  return at::accelerator::getDeviceStats(device)
      .requested_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .current;
}
int64_t device_requested_peak_bytes(c10::DeviceIndex device) {
  return at::accelerator::getDeviceStats(device)
      .requested_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .peak;
}

// With a gradient recorded the product runs through its autograd function: the fused kernel's
// forward below autograd (the same bits as without a gradient), a backward of fp32 ATen
// formulas over slices of rows (2^24 entries each on a GPU: the largest case takes two). The
// product and both gradients of row-strided views against their float64 formulas, to the CPU
// test's bounds: fp32 within 16 units of its roundoff, bf16 / fp16 one rounding more.
TEST(InferenceEpiloguesCuda, SwigluProductAutogradFunction) {
  LINTIME_SKIP_WITHOUT_CUDA();
  using lintime::testing::unit_roundoff;
  at::manual_seed(1);
  for (const auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    // 203: not a multiple of the 16-byte vector, the kernels' element-by-element form.
    std::vector<std::pair<int64_t, int64_t>> shapes = {{3, 64}, {37, 200}, {37, 203}, {1024, 1408}};
    if (dtype == at::kBFloat16) shapes.emplace_back(4100, 4096);  // 1.7e7 entries: many grid-stride rounds
    for (const auto& [rows, width] : shapes) {
      const std::string name = std::string("swiglu autograd ") + c10::toString(dtype) + " " + std::to_string(rows) +
                               "x" + std::to_string(width);
      const auto joined = (at::randn({rows, 2 * width + 8}, at::kDouble) * 3).to(dtype).cuda().requires_grad_(true);
      const auto gate = joined.narrow(-1, 0, width), up = joined.narrow(-1, width + 8, width);
      const auto dout = at::randn({rows, width}, at::kDouble).to(dtype).cuda();
      const auto out = swiglu_product(gate, up);
      ASSERT_TRUE(out.requires_grad()) << name;
      {
        at::NoGradGuard no_grad;
        EXPECT_TRUE(at::equal(out, swiglu_product(gate, up))) << name << ": not the fused kernel's bits";
      }
      const auto grads = torch::autograd::grad({out}, {gate, up}, {dout});
      const auto g64 = gate.detach().cpu().to(at::kDouble), u64 = up.detach().cpu().to(at::kDouble);
      const auto d64 = dout.cpu().to(at::kDouble);
      const auto s = at::sigmoid(g64);
      const double tolerance = dtype == at::kFloat ? 16 * unit_roundoff(at::kFloat)
                                                   : unit_roundoff(dtype) + 16 * unit_roundoff(at::kFloat);
      lintime::testing::expect_close(name, "out", out, g64 * s * u64, tolerance);
      lintime::testing::expect_close(name, "d gate", grads[0], d64 * u64 * s * (1 + g64 * (1 - s)), tolerance);
      lintime::testing::expect_close(name, "d up", grads[1], d64 * g64 * s, tolerance);
    }
  }
}

// At GSA-1.3B's MLP shape (16K tokens, I = 5632) the graph keeps gate and up alone (the device's
// live bytes grow by the output, where autograd through the reference keeps three fp32
// [rows, I] tensors besides, 1.1 GB); the fused backward allocates its two gradients and
// nothing else (the sliced ATen form held about four fp32 slices of 2^24 entries).
TEST(InferenceEpiloguesCuda, SwigluProductGraphKeepsGateAndUp) {
  LINTIME_SKIP_WITHOUT_CUDA();
  const int64_t rows = 16384, width = 5632;
  const auto options = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const auto gate = at::randn({rows, width}, options).requires_grad_(true);
  const auto up = at::randn({rows, width}, options).requires_grad_(true);  // 9.2e7 entries
  const auto dout = at::randn({rows, width}, options);
  const int64_t fp32_bytes = rows * width * 4;
  const c10::DeviceIndex device = gate.device().index();
  int64_t reference_held = 0;
  {
    const int64_t before = device_requested_bytes(device);
    const auto out = swiglu_product_reference(gate, up);
    reference_held = device_requested_bytes(device) - before - static_cast<int64_t>(out.nbytes());
  }
  const int64_t before = device_requested_bytes(device);
  const auto out = swiglu_product(gate, up);
  const int64_t held = device_requested_bytes(device) - before - static_cast<int64_t>(out.nbytes());
  std::printf("swiglu graph: %ld bytes beyond the output (through the reference %ld)\n", static_cast<long>(held),
              static_cast<long>(reference_held));
  EXPECT_EQ(held, 0);
  EXPECT_EQ(reference_held, 3 * fp32_bytes);
  at::accelerator::synchronizeDevice(device);
  at::accelerator::resetPeakStats(device);
  const int64_t start = device_requested_bytes(device);
  const auto grads = torch::autograd::grad({out}, {gate, up}, {dout});
  const auto gradient_bytes = static_cast<int64_t>(grads[0].nbytes() + grads[1].nbytes());
  const int64_t peak = device_requested_peak_bytes(device) - start;
  std::printf("swiglu backward: peak %ld bytes over its start, %.2f fp32 [rows, I] besides the gradients\n",
              static_cast<long>(peak), static_cast<double>(peak - gradient_bytes) / static_cast<double>(fp32_bytes));
  EXPECT_EQ(device_requested_bytes(device) - start, gradient_bytes);
  EXPECT_EQ(peak - gradient_bytes, 0);
}

// swiglu_linear (the MLP's product and down projection in training): output and gradients of
// gate, up and weight against float64, within twice the error of autograd through the ATen
// reference in the dtype; the backward's product is the forward's bits, in both kernel forms
// (width 704 vectorised, 203 element by element).
TEST(InferenceEpiloguesCuda, SwigluLinearMatchesFloat64) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(2);
  for (const auto dtype : {at::kBFloat16, at::kFloat}) {
    for (const int64_t width : {704, 203}) {
      const int64_t rows = 512, out_width = 256;
      const std::string name = std::string("swiglu_linear ") + c10::toString(dtype) + " I" + std::to_string(width);
      const auto joined = (at::randn({rows, 2 * width}, at::kDouble) * 2).to(dtype).cuda().requires_grad_(true);
      const auto gate = joined.narrow(-1, 0, width), up = joined.narrow(-1, width, width);
      const auto weight = (at::randn({out_width, width}, at::kDouble) * 0.05).to(dtype).cuda().requires_grad_(true);
      const auto dy = at::randn({rows, out_width}, at::kDouble).to(dtype).cuda();
      const auto y = swiglu_linear(gate, up, weight, std::nullopt);
      const auto y_aten = swiglu_linear_reference(gate, up, weight, std::nullopt);
      const auto grads = torch::autograd::grad({y}, {joined, weight}, {dy});
      const auto grads_aten = torch::autograd::grad({y_aten}, {joined, weight}, {dy});
      const auto joined64 = joined.detach().cpu().to(at::kDouble).requires_grad_(true);
      const auto weight64 = weight.detach().cpu().to(at::kDouble).requires_grad_(true);
      const auto y64 = swiglu_linear_reference(joined64.narrow(-1, 0, width), joined64.narrow(-1, width, width), weight64,
                                               std::nullopt);
      const auto grads64 = torch::autograd::grad({y64}, {joined64, weight64}, {dy.cpu().to(at::kDouble)});
      expect_close(y, y_aten, y64, name + " y");
      expect_close(grads[0], grads_aten[0], grads64[0], name + " d gate, d up");
      expect_close(grads[1], grads_aten[1], grads64[1], name + " d weight");
      at::NoGradGuard no_grad;
      const auto backward = swiglu_product_bwd_with_product(gate, up, at::randn_like(gate), true);
      EXPECT_TRUE(at::equal(backward.product, swiglu_product(gate, up))) << name << ": the backward's product";
    }
  }
}

// At GSA-1.3B's MLP shape (16K tokens, I = 5632, hidden 2048) the graph keeps nothing beyond the
// output: not the 185 MB product the projection reads (autograd through the reference keeps it).
TEST(InferenceEpiloguesCuda, SwigluLinearGraphKeepsNoProduct) {
  LINTIME_SKIP_WITHOUT_CUDA();
  const int64_t rows = 16384, width = 5632, out_width = 2048;
  const auto options = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const auto gate_up = at::randn({rows, 2 * width}, options).requires_grad_(true);
  const auto gate = gate_up.narrow(-1, 0, width), up = gate_up.narrow(-1, width, width);
  const auto weight = (at::randn({out_width, width}, options) * 0.02).requires_grad_(true);
  const c10::DeviceIndex device = gate.device().index();
  const int64_t product_bytes = rows * width * 2;
  int64_t reference_held = 0;
  {
    const int64_t before = device_requested_bytes(device);
    const auto y = swiglu_linear_reference(gate, up, weight, std::nullopt);
    reference_held = device_requested_bytes(device) - before - static_cast<int64_t>(y.nbytes());
  }
  const int64_t before = device_requested_bytes(device);
  const auto y = swiglu_linear(gate, up, weight, std::nullopt);
  const int64_t held = device_requested_bytes(device) - before - static_cast<int64_t>(y.nbytes());
  std::printf("swiglu_linear graph: %ld bytes beyond the output (through the reference %ld; the product %ld)\n",
              static_cast<long>(held), static_cast<long>(reference_held), static_cast<long>(product_bytes));
  EXPECT_EQ(held, 0);
  EXPECT_GE(reference_held, product_bytes);
}

}  // namespace
}  // namespace lintime::ops
