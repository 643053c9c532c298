// Tests of the fused Taylor linear attention prefill kernel (ops/based/cuda) through the
// dispatcher: taylor_attention_chunk on CUDA bf16/fp16 inputs without gradients takes the
// kernel; its outputs and final states are compared with the float64 reference on the same
// dtype-rounded inputs. Label `cuda`: `ctest -L cuda` runs them on a GPU machine; without a GPU
// they skip with a message.
//
// Tolerances follow from precision: the error of the reference evaluated in the input dtype (the
// CPU chunked op on the rounded inputs computes in fp32 and rounds o once) is printed beside the
// kernel's; the kernel also rounds φ(q), φ(k) and v to the input dtype for its tensor-core
// products, so it is held to twice that error (FlashAttention's rule, as for GSA) and to
// relative RMS ≤ the dtype's unit roundoff (2^-8 bf16, 2^-11 fp16: one rounding) for o; the
// final states, which accumulate in fp32 from the rounded φ(k), likewise.
#include "ops/register/ops.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>

namespace lintime::ops {
namespace {

using lintime::testing::relative_rms_error;

struct Shape {
  int64_t batch, time, heads, value_dim;
};

void check_shape(const Shape& c, at::ScalarType dtype, bool normalize, bool final_state) {
  const std::string name = "B" + std::to_string(c.batch) + "_T" + std::to_string(c.time) + "_H" +
                           std::to_string(c.heads) + "_V" + std::to_string(c.value_dim) +
                           (dtype == at::kBFloat16 ? "_bf16" : "_fp16") + (normalize ? "_norm" : "_nonorm");
  auto q = (at::randn({c.batch, c.time, c.heads, 16}, at::kDouble) / 2).to(dtype).to(at::kDouble);
  auto k = (at::randn({c.batch, c.time, c.heads, 16}, at::kDouble) / 2).to(dtype).to(at::kDouble);
  auto v = at::randn({c.batch, c.time, c.heads, c.value_dim}, at::kDouble).to(dtype).to(at::kDouble);
  const double eps = 1e-6;
  const auto reference = taylor_attention_reference(q, k, v, normalize, eps, std::nullopt, std::nullopt, true);
  const auto in_dtype = taylor_attention_chunk(q.to(dtype), k.to(dtype), v.to(dtype), normalize, eps, std::nullopt,
                                               std::nullopt, true);
  at::NoGradGuard no_grad;
  // NaN in the output buffer's future memory: an element the kernel fails to write shows.
  { auto poison = at::full({c.batch * c.time * c.heads * c.value_dim + 4096}, NAN, at::device(at::kCUDA)); }
  const auto cuda = taylor_attention_chunk(q.to(dtype).cuda(), k.to(dtype).cuda(), v.to(dtype).cuda(), normalize,
                                           eps, std::nullopt, std::nullopt, final_state);
  const double o_error = relative_rms_error(cuda.o.cpu().to(at::kDouble), reference.o);
  const double o_reference_error = relative_rms_error(in_dtype.o.to(at::kDouble), reference.o);
  const double o_bound = lintime::testing::unit_roundoff(dtype);  // one rounding of each output
  std::printf("%-32s o %.2e (reference in dtype %.2e)", name.c_str(), o_error, o_reference_error);
  EXPECT_LE(o_error, o_bound) << name;
  EXPECT_LE(o_error, 2 * o_reference_error + 1e-7) << name << ": more than twice the reference's error in the dtype";
  if (final_state) {
    const double s_error = relative_rms_error(cuda.final_state.cpu().to(at::kDouble), reference.final_state);
    const double z_error = relative_rms_error(cuda.final_normalizer.cpu().to(at::kDouble), reference.final_normalizer);
    std::printf("  S %.2e  z %.2e", s_error, z_error);
    EXPECT_LE(s_error, o_bound) << name;
    EXPECT_LE(z_error, o_bound) << name;
  } else {
    EXPECT_FALSE(cuda.final_state.defined()) << name;
  }
  std::printf("\n");
}

TEST(TaylorCuda, PrefillMatchesFloat64Reference) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(0);
  for (const Shape& shape : {Shape{1, 1, 1, 64}, Shape{2, 63, 3, 64}, Shape{1, 64, 2, 64}, Shape{2, 65, 2, 100},
                             Shape{1, 200, 2, 128}, Shape{2, 1000, 1, 64}, Shape{1, 130, 2, 8}}) {
    for (const auto dtype : {at::kBFloat16, at::kHalf}) {
      check_shape(shape, dtype, /*normalize=*/true, /*final_state=*/true);
      check_shape(shape, dtype, /*normalize=*/false, /*final_state=*/shape.time % 2 == 0);
    }
  }
}

TEST(TaylorCuda, GradientsTakeTheFusedTrainingPathOtherInputsTheGeneralPath) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(1);
  auto q = (at::randn({1, 70, 2, 16}, at::kCUDA) / 2).to(at::kBFloat16).requires_grad_(true);
  auto k = (at::randn({1, 70, 2, 16}, at::kCUDA) / 2).to(at::kBFloat16).requires_grad_(true);
  auto v = at::randn({1, 70, 2, 64}, at::kCUDA).to(at::kBFloat16).requires_grad_(true);
  // With gradients the fused training path runs: backward works, and its forward is the prefill's.
  auto o = taylor_attention_chunk(q, k, v, true, 1e-6).o;
  o.sum().backward();
  EXPECT_TRUE(q.grad().defined() && k.grad().defined() && v.grad().defined());
  at::NoGradGuard no_grad;
  const auto fused = taylor_attention_chunk(q.detach(), k.detach(), v.detach(), true, 1e-6).o;
  EXPECT_TRUE(at::equal(fused, o.detach()));
  // Feature dim 8 and fp32 inputs are not the kernel's: the general path, same results as the CPU.
  auto q8 = at::randn({1, 40, 2, 8}, at::kCUDA), k8 = at::randn({1, 40, 2, 8}, at::kCUDA);
  auto v8 = at::randn({1, 40, 2, 16}, at::kCUDA);
  const auto general = taylor_attention_chunk(q8, k8, v8, true, 1e-6).o;
  const auto cpu = taylor_attention_chunk(q8.cpu(), k8.cpu(), v8.cpu(), true, 1e-6).o;
  EXPECT_LE(relative_rms_error(general.cpu().to(at::kDouble), cpu.to(at::kDouble)), 1e-5);
}

// Training through the fused kernels (prefill forward, fused backward): the gradients of q, k
// and v against float64 autograd of the chunked form on the same dtype-rounded inputs, held to
// twice the error of that autograd evaluated in the dtype (or the dtype's unit roundoff,
// 2^-8 / 2^-11 relative RMS, when that is larger: the autograd keeps fp32 intermediates that
// the kernel rounds; measured up to 2.3e-3 / 2.4e-4 on the H200).
void check_gradients(const Shape& c, at::ScalarType dtype, bool normalize) {
  const std::string name = "B" + std::to_string(c.batch) + "_T" + std::to_string(c.time) + "_H" +
                           std::to_string(c.heads) + "_V" + std::to_string(c.value_dim) +
                           (dtype == at::kBFloat16 ? "_bf16" : "_fp16") + (normalize ? "_norm" : "_nonorm");
  auto rounded = [&](at::Tensor x) { return x.to(dtype).to(at::kDouble); };
  const auto q = rounded(at::randn({c.batch, c.time, c.heads, 16}, at::kDouble) / 2);
  const auto k = rounded(at::randn({c.batch, c.time, c.heads, 16}, at::kDouble) / 2);
  const auto v = rounded(at::randn({c.batch, c.time, c.heads, c.value_dim}, at::kDouble));
  const auto grad_o = rounded(at::randn({c.batch, c.time, c.heads, c.value_dim}, at::kDouble));
  const double eps = 1e-6;
  auto gradients = [&](const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& v0, bool expect_fused) {
    auto qg = q0.detach().requires_grad_(true), kg = k0.detach().requires_grad_(true);
    auto vg = v0.detach().requires_grad_(true);
    const auto o = taylor_attention_chunk(qg, kg, vg, normalize, eps).o;
    if (expect_fused) {
      EXPECT_NE(o.grad_fn()->name().find("TaylorFused"), std::string::npos) << name << ": " << o.grad_fn()->name();
    }
    o.backward(grad_o.to(o.scalar_type()).to(o.device()));
    return std::array<at::Tensor, 3>{qg.grad().cpu().to(at::kDouble), kg.grad().cpu().to(at::kDouble),
                                     vg.grad().cpu().to(at::kDouble)};
  };
  const auto reference = gradients(q, k, v, false);
  const auto in_dtype = gradients(q.to(dtype), k.to(dtype), v.to(dtype), false);
  { auto poison = at::full({4 * c.batch * c.time * c.heads * (c.value_dim + 32) + 4096}, NAN, at::device(at::kCUDA)); }
  const auto cuda = gradients(q.to(dtype).cuda(), k.to(dtype).cuda(), v.to(dtype).cuda(), true);
  lintime::testing::expect_gradients_match(name, {"dq", "dk", "dv"}, {cuda[0], cuda[1], cuda[2]},
                                           {reference[0], reference[1], reference[2]},
                                           {in_dtype[0], in_dtype[1], in_dtype[2]}, grad_o,
                                           lintime::testing::unit_roundoff(dtype));
}

TEST(TaylorCuda, FusedBackwardMatchesFloat64Gradients) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(3);
  for (const Shape& shape : {Shape{1, 1, 1, 64}, Shape{2, 63, 3, 64}, Shape{1, 64, 2, 64}, Shape{2, 65, 2, 40},
                             Shape{1, 200, 2, 64}, Shape{2, 1000, 1, 64}, Shape{1, 130, 2, 8}}) {
    for (const auto dtype : {at::kBFloat16, at::kHalf}) {
      for (const bool normalize : {true, false}) check_gradients(shape, dtype, normalize);
    }
  }
}

// Value dims over 64, or asking for the final states, keep the ATen form under autograd.
TEST(TaylorCuda, TrainingOutsideTheFusedBackwardTakesTheATenForm) {
  LINTIME_SKIP_WITHOUT_CUDA();
  auto q = (at::randn({1, 70, 2, 16}, at::kCUDA) / 2).to(at::kBFloat16).requires_grad_(true);
  auto k = (at::randn({1, 70, 2, 16}, at::kCUDA) / 2).to(at::kBFloat16).requires_grad_(true);
  auto wide = at::randn({1, 70, 2, 100}, at::kCUDA).to(at::kBFloat16).requires_grad_(true);
  const auto o = taylor_attention_chunk(q, k, wide, true, 1e-6).o;
  EXPECT_EQ(o.grad_fn()->name().find("TaylorFused"), std::string::npos);
  auto v = at::randn({1, 70, 2, 64}, at::kCUDA).to(at::kBFloat16).requires_grad_(true);
  const auto with_state = taylor_attention_chunk(q, k, v, true, 1e-6, std::nullopt, std::nullopt, true);
  EXPECT_EQ(with_state.o.grad_fn()->name().find("TaylorFused"), std::string::npos);
  EXPECT_TRUE(with_state.final_state.defined());
}

// The fused in-place step against the float64 step from the same states: o and both states.
TEST(TaylorCuda, InPlaceStepMatchesFloat64Step) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(2);
  for (const int64_t value_dim : {64, 100, 8, 130}) {
    for (const auto dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
      for (const bool normalize : {true, false}) {
        const int64_t B = 3, H = 2, E = 273;
        auto q = (at::randn({B, H, 16}, at::kDouble) / 2).to(dtype).to(at::kDouble);
        auto k = (at::randn({B, H, 16}, at::kDouble) / 2).to(dtype).to(at::kDouble);
        auto v = at::randn({B, H, value_dim}, at::kDouble).to(dtype).to(at::kDouble);
        // States as after some tokens: positive normaliser, state of matching scale.
        auto state = at::randn({B, H, E, value_dim}, at::kDouble).to(at::kFloat).to(at::kDouble);
        auto normalizer = (at::rand({B, H, E}, at::kDouble) * 10 + 20).to(at::kFloat).to(at::kDouble);
        const auto [o_ref, state_ref, normalizer_ref] =
            taylor_attention_step(q, k, v, normalize, 1e-6, state, normalizer);
        at::Tensor state_cuda = state.to(at::kFloat).cuda(), normalizer_cuda = normalizer.to(at::kFloat).cuda();
        const auto o = taylor_attention_step_(q.to(dtype).cuda(), k.to(dtype).cuda(), v.to(dtype).cuda(), normalize,
                                              1e-6, state_cuda, normalizer_cuda);
        const std::string name = "V" + std::to_string(value_dim) + "_" + c10::toString(dtype) +
                                 (normalize ? "_norm" : "_nonorm");
        // o rounded once to the dtype (fp32: the fp32 sums' error); states are fp32 sums of two terms.
        const double o_bound = dtype == at::kBFloat16 ? 5e-3 : dtype == at::kHalf ? 1e-3 : 1e-5;
        EXPECT_LE(relative_rms_error(o.cpu().to(at::kDouble), o_ref), o_bound) << name;
        EXPECT_LE(relative_rms_error(state_cuda.cpu().to(at::kDouble), state_ref), 1e-6) << name;
        EXPECT_LE(relative_rms_error(normalizer_cuda.cpu().to(at::kDouble), normalizer_ref), 1e-6) << name;
      }
    }
  }
}

}  // namespace
}  // namespace lintime::ops
