// Recurrent decoding states kept in bfloat16 between calls (Decoder::set_recurrent_state_dtype,
// `lintime serve --state-dtype bfloat16`): every call computes in fp32 from the widened states
// and rounds its result once, so a bf16-state decode equals an fp32 decode whose states are
// rounded to bf16 after every call — bit for bit — for GSA (with short convolutions, whose
// histories keep the activations' dtype), GLA and BASED (Taylor states; its window's ring buffers
// are not recurrent states), through prefill and steps and through the slot-addressed path; the
// recurrent states take half the bytes.
#include "support/decoder_models.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

namespace {

using lintime::models::Decoder;

// Rounds every recurrent state of the cache to bf16 and back (what a narrow cache stores).
void round_states(lintime::state::Cache& cache) {
  for (int64_t i = 0; i < cache.num_layers(); ++i) {
    for (at::Tensor* tensor : cache.layer(i).recurrent_tensors()) {
      if (tensor->defined()) *tensor = tensor->to(at::kBFloat16).to(at::kFloat);
    }
  }
}

int64_t recurrent_bytes(lintime::state::Cache& cache) {
  int64_t bytes = 0;
  for (int64_t i = 0; i < cache.num_layers(); ++i) {
    for (at::Tensor* tensor : cache.layer(i).recurrent_tensors()) {
      if (tensor->defined()) bytes += tensor->numel() * static_cast<int64_t>(tensor->element_size());
    }
  }
  return bytes;
}

class NarrowStates : public ::testing::TestWithParam<std::string> {};

TEST_P(NarrowStates, EqualAnFp32DecodeRoundedAfterEveryCall) {
  std::unique_ptr<Decoder> model;
  for (auto& [name, factory] : lintime::testing::decoder_test_models()) {
    if (name == GetParam()) model = factory();
  }
  ASSERT_NE(model, nullptr);
  model->to(at::kCPU, at::kFloat);
  at::NoGradGuard no_grad;
  const at::Tensor prompt = at::randint(lintime::testing::kDecoderTestVocab, {2, 7}, lintime::testing::make_generator(3),
                                        at::kLong);
  const at::Tensor steps = at::randint(lintime::testing::kDecoderTestVocab, {2, 5}, lintime::testing::make_generator(4),
                                       at::kLong);

  // fp32 states, rounded to bf16 after every call by hand.
  lintime::state::Cache wide = model->make_cache(2);
  std::vector<at::Tensor> expected = {model->prefill(prompt, wide)};
  round_states(wide);
  for (int64_t t = 0; t < steps.size(1); ++t) {
    expected.push_back(model->step(steps.select(1, t), wide));
    round_states(wide);
  }
  // bf16 states.
  model->set_recurrent_state_dtype(at::kBFloat16);
  lintime::state::Cache narrow = model->make_cache(2);
  std::vector<at::Tensor> got = {model->prefill(prompt, narrow)};
  for (int64_t t = 0; t < steps.size(1); ++t) got.push_back(model->step(steps.select(1, t), narrow));
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(at::equal(got[i], expected[i])) << "call " << i;
  for (int64_t i = 0; i < narrow.num_layers(); ++i) {
    for (at::Tensor* tensor : narrow.layer(i).recurrent_tensors()) {
      if (tensor->defined()) EXPECT_EQ(tensor->scalar_type(), at::kBFloat16) << "layer " << i;
    }
  }
  EXPECT_GT(recurrent_bytes(wide), 0);
  EXPECT_EQ(2 * recurrent_bytes(narrow), recurrent_bytes(wide));

  // The running-batch path (a server's): slot 1 alone, continued from the same narrow states.
  lintime::state::Cache slots = model->make_cache(3);
  const int64_t slot = slots.admit();
  std::vector<at::Tensor> by_slot = {model->forward_slots(prompt.slice(0, 1, 2), slots, {slot}).select(1, -1)};
  for (int64_t t = 0; t < steps.size(1); ++t) {
    by_slot.push_back(model->forward_slots(steps.slice(0, 1, 2).slice(1, t, t + 1), slots, {slot}).select(1, 0));
  }
  for (size_t i = 0; i < by_slot.size(); ++i) {
    const at::Tensor reference = (i == 0 ? expected[0].select(1, -1) : expected[i]).slice(0, 1, 2);
    EXPECT_LE(lintime::testing::relative_max_error(by_slot[i], reference), 1e-5) << "call " << i;
  }
  model->set_recurrent_state_dtype(std::nullopt);
  EXPECT_EQ(model->make_cache(1).layer(0).recurrent_dtype, std::nullopt);
}

INSTANTIATE_TEST_SUITE_P(Models, NarrowStates, ::testing::Values("gsa", "gla", "based"),
                         [](const auto& info) { return info.param; });

TEST(NarrowStates, OnlyFloatingDtypesOfAtMost32BitsAreTaken) {
  auto model = lintime::testing::decoder_test_models().front().second();
  EXPECT_EQ(lintime::testing::error_of([&] { model->set_recurrent_state_dtype(at::kDouble); }),
            "decoder: recurrent states can be kept in float32, bfloat16 or float16, got Double");
}

}  // namespace
