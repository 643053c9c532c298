// Batched decode steps through fixed-size buckets (infer/slot_steps.h), on a CPU where nothing is
// recorded: steps over changing sets of slots (1 to 5 rows in buckets of 1, 2, 4 and 5, padded
// with the withheld slot) give the logits and states Decoder::forward_slots gives, leave every
// other slot untouched, advance the token counts alike, and stage anew when the cache's tensors
// are replaced. KV caches (Llama, Mistral, GSA's attention hybrid) are continued in place rather
// than staged, and grow past their first capacity during the steps. Models whose steps cannot be
// replayed, and bad slots, are refused by name.
#include "infer/slot_steps.h"

#include "core/error.h"
#include "support/decoder_models.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using lintime::infer::SlotSteps;
using lintime::testing::make_generator;
using lintime::testing::relative_max_error;

constexpr int64_t kVocab = lintime::testing::kDecoderTestVocab;
constexpr int64_t kSequences = 5;  // the largest bucket; slot 5 is the padding slot

// Every state tensor of `slot` in `cache`, in order; of a KV cache, the positions the slot has
// filled (the rest of its capacity is unwritten memory).
std::vector<at::Tensor> slot_state(lintime::state::Cache& cache, int64_t slot) {
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < cache.num_layers(); ++i) {
    const bool positional = cache.layer(i).rows_share_a_position();
    for (at::Tensor* tensor : cache.layer(i).tensors()) {
      if (!tensor->defined()) continue;
      at::Tensor row = tensor->select(0, slot);
      if (positional) row = row.narrow(0, 0, cache.slot_tokens(slot));
      rows.push_back(row.clone());
    }
  }
  return rows;
}

TEST(SlotSteps, BucketedStepsEqualForwardSlots) {
  at::NoGradGuard no_grad;
  int64_t replayable_models = 0;
  for (const auto& [name, make] : lintime::testing::decoder_test_models()) {
    auto model = make();
    if (!model->slot_steps_are_replayable()) continue;
    ++replayable_models;
    SCOPED_TRACE(name);
    // Two caches with the same prompts in the same slots: one stepped by forward_slots, one by
    // buckets (with the padding slot withheld).
    auto reference = model->make_cache(kSequences);
    auto bucketed = model->make_cache(kSequences + 1);
    bucketed.withhold(kSequences);
    at::Generator generator = make_generator(21);
    for (int64_t s = 0; s < kSequences; ++s) {
      ASSERT_EQ(reference.admit(), s);
      ASSERT_EQ(bucketed.admit(), s);
      const at::Tensor prompt = at::randint(kVocab, {1, 2 + s}, generator, at::kLong);
      model->forward_slots(prompt, reference, {s});
      model->forward_slots(prompt, bucketed, {s});
    }
    EXPECT_EQ(bucketed.admit(), -1) << "the padding slot is never admitted";
    SlotSteps steps(*model, bucketed, kSequences, kSequences);
    EXPECT_EQ(steps.bucket_sizes(), (std::vector<int64_t>{1, 2, 4, 5}));
    // Slot sets of 1 to 5 rows, in no particular order; each fills its bucket differently.
    // Three rounds take the longest slot from 6 to 21 tokens: a KV cache grows past its first 16.
    const std::vector<std::vector<int64_t>> one_round = {{2}, {4, 0, 3}, {0, 1, 2, 3, 4}, {3, 1}, {4}, {1, 0, 4, 2}};
    std::vector<std::vector<int64_t>> slot_sets;
    for (int round = 0; round < 3; ++round) slot_sets.insert(slot_sets.end(), one_round.begin(), one_round.end());
    for (const auto& slots : slot_sets) {
      std::vector<int64_t> tokens;
      for (size_t i = 0; i < slots.size(); ++i) tokens.push_back(at::randint(kVocab, {1}, generator).item<int64_t>());
      std::vector<std::vector<at::Tensor>> untouched;
      for (int64_t slot = 0; slot < kSequences; ++slot) untouched.push_back(slot_state(bucketed, slot));
      const at::Tensor expected =
          model->forward_slots(at::tensor(tokens, at::kLong).unsqueeze(1), reference, slots).select(1, 0);
      const at::Tensor got = steps.step(tokens, slots);
      ASSERT_EQ(got.sizes(), expected.sizes());
      EXPECT_LT(relative_max_error(got, expected), 1e-12) << slots.size() << " rows";
      for (int64_t slot = 0; slot < kSequences; ++slot) {
        const bool stepped = std::find(slots.begin(), slots.end(), slot) != slots.end();
        const auto now = slot_state(bucketed, slot), want = slot_state(reference, slot);
        ASSERT_EQ(now.size(), want.size());
        for (size_t j = 0; j < now.size(); ++j) {
          EXPECT_LT(relative_max_error(now[j], want[j]), 1e-12) << "slot " << slot << " tensor " << j;
          if (!stepped) EXPECT_TRUE(at::equal(now[j], untouched[static_cast<size_t>(slot)][j])) << "slot " << slot;
        }
        EXPECT_EQ(bucketed.slot_tokens(slot), reference.slot_tokens(slot)) << "slot " << slot;
      }
    }
    EXPECT_EQ(steps.recorded_buckets(), 0) << "nothing is recorded on a CPU";
    // A new cache tensor (what a first prefill allocates) is staged anew, not written through
    // the old staging: replacing slot 0's states by a copy keeps the steps equal.
    for (int64_t i = 0; i < bucketed.num_layers(); ++i) {
      for (at::Tensor* tensor : bucketed.layer(i).tensors()) {
        if (tensor->defined()) *tensor = tensor->clone();
      }
    }
    const at::Tensor expected = model->forward_slots(at::tensor(std::vector<int64_t>{3, 5}, at::kLong).unsqueeze(1), reference, {0, 4}).select(1, 0);
    EXPECT_LT(relative_max_error(steps.step({3, 5}, {0, 4}), expected), 1e-12);
    for (int64_t slot : {0, 4}) {
      const auto now = slot_state(bucketed, slot), want = slot_state(reference, slot);
      for (size_t j = 0; j < now.size(); ++j) EXPECT_LT(relative_max_error(now[j], want[j]), 1e-12);
    }
  }
  EXPECT_GE(replayable_models, 5) << "GSA (and its hybrid with attention), GLA, Llama and Mistral at least";
}

TEST(SlotSteps, RefusesWhatItCannotRun) {
  at::NoGradGuard no_grad;
  for (const auto& [name, make] : lintime::testing::decoder_test_models()) {
    auto model = make();
    auto cache = model->make_cache(3);
    if (!model->slot_steps_are_replayable()) {
      cache.withhold(2);
      EXPECT_THROW(
          {
            try {
              SlotSteps steps(*model, cache, 2, 2);
            } catch (const lintime::Error& error) {
              EXPECT_NE(std::string(error.what()).find("cannot be replayed"), std::string::npos) << error.what();
              throw;
            }
          },
          lintime::Error)
          << name;
      continue;
    }
    EXPECT_THROW(SlotSteps(*model, cache, 2, 2), lintime::Error) << name << ": the padding slot is not withheld";
    cache.withhold(2);
    EXPECT_THROW(SlotSteps(*model, cache, 2, 3), lintime::Error) << name << ": a bucket larger than the slots";
    SlotSteps steps(*model, cache, 2, 2);
    ASSERT_EQ(cache.admit(), 0);
    model->forward_slots(at::tensor(std::vector<int64_t>{1, 2}, at::kLong).unsqueeze(0), cache, {0});
    EXPECT_THROW(steps.step({1}, {2}), lintime::Error) << name << ": the padding slot";
    EXPECT_THROW(steps.step({1, 1}, {0, 0}), lintime::Error) << name << ": a slot twice";
    EXPECT_THROW(steps.step({1}, {0, 1}), lintime::Error) << name << ": tokens and slots differ";
    EXPECT_THROW(steps.step({1, 1, 1}, {0, 1, 3}), lintime::Error) << name << ": more rows than the largest bucket";
  }
}

}  // namespace
