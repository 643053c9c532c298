// The decoder stack's training paths, for every architecture in float64: packed sequences
// (input_ids [1, T] with cu_seqlens, fla's varlen training) give each sequence the logits and
// gradients it gets alone — natively for GSA, one sequence at a time for the other mixers —
// and activation checkpointing (every block, every second block) changes no gradient.
#include "support/decoder_models.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace {

using lintime::models::Decoder;
using lintime::testing::relative_max_error;

// Exactly representable in float64 sums of the same terms in another order differ by a few
// ulps per layer: 1e-12 relative leaves room for that and catches any real difference.
constexpr double kTolerance = 1e-12;

std::map<std::string, at::Tensor> gradients_of(Decoder& model) {
  std::map<std::string, at::Tensor> grads;
  for (auto& [name, parameter] : model.named_parameters()) {
    if (parameter.grad().defined()) grads[name] = parameter.grad().clone();
  }
  return grads;
}

void clear_gradients(Decoder& model) {
  for (auto& [name, parameter] : model.named_parameters()) parameter.mutable_grad() = at::Tensor();
}

void set_requires_grad(Decoder& model) {
  for (auto& [name, parameter] : model.named_parameters()) parameter.requires_grad_(true);
}

TEST(DecoderTraining, PackedSequencesEqualEachSequenceAlone) {
  const std::vector<int64_t> lengths = {5, 1, 9, 3};
  int64_t total = 0;
  std::vector<int32_t> offsets = {0};
  for (int64_t length : lengths) offsets.push_back(static_cast<int32_t>(total += length));
  auto generator = lintime::testing::make_generator(3);
  const at::Tensor ids = at::randint(lintime::testing::kDecoderTestVocab, {1, total}, generator, at::kLong);
  const at::Tensor cu_seqlens = at::tensor(offsets, at::kInt);
  for (auto& [name, make] : lintime::testing::decoder_test_models()) {
    SCOPED_TRACE(name);
    auto model = make();
    set_requires_grad(*model);
    const at::Tensor weights = at::randn({1, total, lintime::testing::kDecoderTestVocab}, generator, at::kDouble);

    const at::Tensor packed = model->forward(ids, nullptr, cu_seqlens);
    (packed * weights).sum().backward();
    const auto packed_grads = gradients_of(*model);
    clear_gradients(*model);

    std::vector<at::Tensor> alone;
    for (size_t i = 0; i < lengths.size(); ++i) {
      const at::Tensor logits = model->forward(ids.narrow(1, offsets[i], lengths[i]));
      (logits * weights.narrow(1, offsets[i], lengths[i])).sum().backward();
      alone.push_back(logits);
    }
    const auto alone_grads = gradients_of(*model);
    EXPECT_LE(relative_max_error(packed, at::cat(alone, 1)), kTolerance) << name << ": logits";
    ASSERT_EQ(packed_grads.size(), alone_grads.size());
    for (const auto& [parameter, grad] : alone_grads) {
      EXPECT_LE(relative_max_error(packed_grads.at(parameter), grad), kTolerance) << name << ": grad of " << parameter;
    }
  }
}

TEST(DecoderTraining, PackedSequencesAreChecked) {
  auto model = lintime::testing::decoder_test_models().front().second();
  const at::Tensor ids = at::zeros({1, 6}, at::kLong);
  EXPECT_THROW(model->forward(ids, nullptr, at::tensor({0, 4}, at::kInt)), lintime::Error);     // ends before T
  EXPECT_THROW(model->forward(ids, nullptr, at::tensor({0, 3, 3, 6}, at::kInt)), lintime::Error);  // empty sequence
  EXPECT_THROW(model->forward(at::zeros({2, 3}, at::kLong), nullptr, at::tensor({0, 3}, at::kInt)), lintime::Error);
  try {
    model->forward(ids, nullptr, at::tensor({1, 6}, at::kInt));
    FAIL() << "cu_seqlens starting at 1 was accepted";
  } catch (const lintime::Error& error) {
    EXPECT_NE(std::string(error.what()).find("from 0 to the packed row's 6 tokens"), std::string::npos) << error.what();
  }
}

TEST(DecoderTraining, ActivationCheckpointingChangesNoGradient) {
  auto generator = lintime::testing::make_generator(4);
  const at::Tensor ids = at::randint(lintime::testing::kDecoderTestVocab, {2, 11}, generator, at::kLong);
  const at::Tensor weights = at::randn({2, 11, lintime::testing::kDecoderTestVocab}, generator, at::kDouble);
  for (auto& [name, make] : lintime::testing::decoder_test_models()) {
    SCOPED_TRACE(name);
    auto model = make();
    set_requires_grad(*model);
    std::map<int64_t, std::map<std::string, at::Tensor>> grads;
    std::map<int64_t, at::Tensor> logits;
    for (int64_t every : {0, 1, 2}) {
      model->model.set_activation_checkpointing(every);
      logits[every] = model->forward(ids);
      (logits[every] * weights).sum().backward();
      grads[every] = gradients_of(*model);
      clear_gradients(*model);
    }
    for (int64_t every : {1, 2}) {
      EXPECT_LE(relative_max_error(logits[every], logits[0]), kTolerance) << name << " every " << every;
      ASSERT_EQ(grads[every].size(), grads[0].size()) << name << " every " << every;
      for (const auto& [parameter, grad] : grads[0]) {
        EXPECT_LE(relative_max_error(grads[every].at(parameter), grad), kTolerance)
            << name << " every " << every << ": grad of " << parameter;
      }
    }
  }
}

}  // namespace
