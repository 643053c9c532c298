// The chunked linear cross-entropy on CUDA with bf16 and fp16 inputs (the trainer's path: fp32
// logits from 16-bit operands, each chunk's d_logits rounded to the operand dtype, d_weight
// accumulated in fp32 by the GEMM itself across chunks) against the float64 reference of the
// same rounded inputs. Several chunks per call. Bounds from precision: the loss is formed in fp32
// (1e-5 relative); every gradient passes through one rounding of d_logits to the 16-bit dtype and
// d_hidden through one more of its own, so each lies within twice the dtype's unit roundoff
// (relative RMS). Label `cuda`: skipped without a GPU.
#include "train/linear_cross_entropy.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {

using lintime::testing::relative_rms_error;
using lintime::testing::unit_roundoff;
using lintime::train::linear_cross_entropy;
using lintime::train::linear_cross_entropy_reference;
using lintime::train::LinearCrossEntropyOptions;

TEST(LinearCrossEntropyCuda, SixteenBitChunksFollowTheFloat64Reference) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::manual_seed(3);
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    for (const bool bias : {false, true}) {
      const int64_t tokens = 300, dim = 64, vocabulary = 1000;
      const std::string name = std::string(c10::toString(dtype)) + (bias ? " bias" : "");
      LinearCrossEntropyOptions options;
      options.chunk_tokens = 64;  // five chunks, the last one short
      const auto hidden64 = at::randn({tokens, dim}, at::kDouble).to(dtype).to(at::kDouble);
      const auto weight64 = (at::randn({vocabulary, dim}, at::kDouble) / 8).to(dtype).to(at::kDouble);
      const auto bias64 = (at::randn({vocabulary}, at::kDouble) / 2).to(dtype).to(at::kDouble);
      auto labels = at::randint(0, vocabulary, {tokens}, at::TensorOptions().dtype(at::kLong));
      labels.narrow(0, 10, 20).fill_(options.ignore_index);
      std::vector<at::Tensor> leaves64 = {hidden64.clone().requires_grad_(true), weight64.clone().requires_grad_(true)};
      std::vector<at::Tensor> leaves = {hidden64.to(dtype).cuda().requires_grad_(true),
                                        weight64.to(dtype).cuda().requires_grad_(true)};
      if (bias) {
        leaves64.push_back(bias64.clone().requires_grad_(true));
        leaves.push_back(bias64.to(dtype).cuda().requires_grad_(true));
      }
      const auto loss64 = linear_cross_entropy_reference(leaves64[0], leaves64[1], bias ? leaves64[2] : at::Tensor(),
                                                         labels, options);
      const auto loss = linear_cross_entropy(leaves[0], leaves[1], bias ? leaves[2] : at::Tensor(), labels.cuda(), options);
      const auto grads64 = torch::autograd::grad({loss64}, leaves64);
      const auto grads = torch::autograd::grad({loss}, leaves);
      const double loss_error = std::abs(loss.item<double>() - loss64.item<double>()) / std::abs(loss64.item<double>());
      std::printf("%-14s loss %.2e", name.c_str(), loss_error);
      EXPECT_LE(loss_error, 1e-5) << name;
      const char* names[] = {"d hidden", "d weight", "d bias"};
      for (size_t i = 0; i < grads.size(); ++i) {
        const double error = relative_rms_error(grads[i].cpu().to(at::kDouble), grads64[i]);
        std::printf("  %s %.2e", names[i], error);
        EXPECT_LE(error, 2 * unit_roundoff(dtype)) << name << " " << names[i];
      }
      std::printf("\n");
    }
  }
}

}  // namespace
