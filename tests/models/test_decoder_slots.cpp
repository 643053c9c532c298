// The slot-addressed cache of the decoder stack (state/cache.h, Decoder::forward_slots): four
// sequences that start at different steps share a cache of three slots — joining a running
// batch, decoding together, leaving it, and a fourth taking a freed slot — and each gets the
// same greedy tokens and logits as when it is decoded alone. For every decoder architecture:
// GSA (short convolutions), its hybrid with a windowed softmax-attention layer, GLA, BASED
// (convolution, Taylor linear attention, sliding window), Llama and Mistral (KV caches and ring
// buffers: a KV cache continues its rows in place at their own positions, a ring buffer in
// groups of equal length).
#include "core/error.h"
#include "support/decoder_models.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

using lintime::models::Decoder;
using lintime::testing::make_generator;
using lintime::testing::relative_max_error;

constexpr int64_t kVocab = lintime::testing::kDecoderTestVocab;
constexpr int64_t kNewTokens = 6;

std::vector<std::pair<std::string, lintime::testing::DecoderFactory>> models() {
  return lintime::testing::decoder_test_models();
}

struct Sequence {
  at::Tensor prompt;  // [T]
  int64_t start;      // the iteration it joins
  int64_t slot = -1;
  int64_t last_slot = -1;  // the slot it held, once it left
  std::vector<int64_t> tokens;
  std::vector<at::Tensor> logits;  // of each generated token [V]

  void retire() { last_slot = std::exchange(slot, -1); }
};

int64_t greedy(const at::Tensor& logits) { return logits.argmax().item<int64_t>(); }

// Decoded alone: prefill, then one step per token.
Sequence alone(Decoder& model, const Sequence& sequence) {
  Sequence result{sequence.prompt, sequence.start};
  auto cache = model.make_cache(1);
  at::Tensor logits = model.prefill(sequence.prompt.unsqueeze(0), cache).select(0, 0).select(0, -1);
  while (true) {
    result.logits.push_back(logits);
    result.tokens.push_back(greedy(logits));
    if (static_cast<int64_t>(result.tokens.size()) >= kNewTokens) return result;
    logits = model.step(at::tensor({result.tokens.back()}, at::kLong), cache).select(0, 0);
  }
}

TEST(DecoderSlots, SequencesJoiningAndLeavingARunningBatchDecodeAsAlone) {
  at::NoGradGuard no_grad;
  for (const auto& [name, make] : models()) {
    auto model = make();
    at::Generator generator = make_generator(5);
    std::vector<Sequence> sequences;
    for (auto [length, start] : {std::pair{5, 0}, {3, 2}, {7, 3}, {4, 6}}) {
      sequences.push_back({at::randint(kVocab, {length}, generator, at::kLong), start});
    }
    auto cache = model->make_cache(3);
    bool fourth_reused_a_slot = false;
    for (int64_t iteration = 0; iteration < 20; ++iteration) {
      std::vector<Sequence*> stepping;
      for (Sequence& s : sequences) {
        if (s.slot >= 0) stepping.push_back(&s);
      }
      for (Sequence& s : sequences) {  // joins: the prompt's prefill gives its first token
        if (s.start != iteration) continue;
        s.slot = cache.admit();
        ASSERT_GE(s.slot, 0) << name << ": no free slot at iteration " << iteration;
        fourth_reused_a_slot |= &s == &sequences[3] && s.slot == sequences[0].last_slot;
        const at::Tensor logits = model->forward_slots(s.prompt.unsqueeze(0), cache, {s.slot}).select(0, 0).select(0, -1);
        s.logits.push_back(logits);
        s.tokens.push_back(greedy(logits));
      }
      if (!stepping.empty()) {  // one step for the sequences already running
        std::vector<int64_t> slots, last;
        for (Sequence* s : stepping) {
          slots.push_back(s->slot);
          last.push_back(s->tokens.back());
        }
        const at::Tensor logits = model->forward_slots(at::tensor(last, at::kLong).unsqueeze(1), cache, slots);
        for (size_t i = 0; i < stepping.size(); ++i) {
          stepping[i]->logits.push_back(logits.select(0, static_cast<int64_t>(i)).select(0, 0));
          stepping[i]->tokens.push_back(greedy(stepping[i]->logits.back()));
        }
      }
      for (Sequence& s : sequences) {  // leaves after its last token
        if (s.slot >= 0 && static_cast<int64_t>(s.tokens.size()) == kNewTokens) {
          cache.retire(s.slot);
          s.retire();
        }
      }
    }
    EXPECT_TRUE(fourth_reused_a_slot) << name;
    for (size_t i = 0; i < sequences.size(); ++i) {
      const Sequence reference = alone(*model, sequences[i]);
      EXPECT_EQ(sequences[i].tokens, reference.tokens) << name << " sequence " << i;
      ASSERT_EQ(sequences[i].logits.size(), reference.logits.size()) << name;
      EXPECT_LT(relative_max_error(at::stack(sequences[i].logits), at::stack(reference.logits)), 1e-12)
          << name << " sequence " << i;
    }
  }
}

// A server prefills long prompts in chunks while other slots run: one forward_slots call then
// continues slots of different cached lengths by several tokens each (KV caches in place, each
// row at its own position; recurrent states gathered). Each row equals the same tokens run alone.
TEST(DecoderSlots, ChunksAfterDifferentCachedLengthsContinueTogether) {
  at::NoGradGuard no_grad;
  for (const auto& [name, make] : models()) {
    auto model = make();
    if (!model->prefills_continue()) continue;  // the hybrid's windowed attention takes a prompt at once
    at::Generator generator = make_generator(9);
    const std::vector<int64_t> cached = {2, 9, 5};  // slots 2, 0 and 1 after the first prompts
    std::vector<at::Tensor> prompts, chunks;
    for (int64_t length : cached) {
      prompts.push_back(at::randint(kVocab, {length}, generator, at::kLong));
      chunks.push_back(at::randint(kVocab, {3}, generator, at::kLong));
    }
    auto cache = model->make_cache(4);
    std::vector<int64_t> slots;
    for (const at::Tensor& prompt : prompts) {
      slots.push_back(cache.admit());
      model->forward_slots(prompt.unsqueeze(0), cache, {slots.back()});
    }
    std::swap(slots[0], slots[2]);  // rows need not come in slot order
    std::swap(prompts[0], prompts[2]);
    std::swap(chunks[0], chunks[2]);
    const at::Tensor logits = model->forward_slots(at::stack(chunks), cache, slots);  // [3, 3, V]
    for (size_t r = 0; r < slots.size(); ++r) {
      const at::Tensor whole = at::cat({prompts[r], chunks[r]}).unsqueeze(0);
      const at::Tensor reference = model->forward(whole).select(0, 0).narrow(0, prompts[r].size(0), 3);
      EXPECT_LT(relative_max_error(logits.select(0, static_cast<int64_t>(r)), reference), 1e-12)
          << name << " row " << r << " (slot " << slots[r] << ", " << prompts[r].size(0) << " cached tokens)";
    }
    EXPECT_EQ(cache.slot_tokens(slots[0]), prompts[0].size(0) + 3) << name;
  }
}

TEST(DecoderSlots, AdmitRetireAndBadSlots) {
  at::NoGradGuard no_grad;
  auto model = models().front().second();
  auto cache = model->make_cache(2);
  EXPECT_EQ(cache.admit(), 0);
  EXPECT_EQ(cache.admit(), 1);
  EXPECT_EQ(cache.admit(), -1);  // full
  cache.retire(0);
  EXPECT_EQ(cache.admit(), 0);
  const at::Tensor two = at::zeros({2, 1}, at::kLong);
  EXPECT_EQ(lintime::testing::error_of([&] { model->forward_slots(two, cache, {1, 1}); }),
            "decoder forward_slots: slots must be distinct and in [0, 2), got 1");
  EXPECT_EQ(lintime::testing::error_of([&] { model->forward_slots(two, cache, {0, 2}); }),
            "decoder forward_slots: slots must be distinct and in [0, 2), got 2");
  // A KV model's slots at different lengths cannot run as one plain batch.
  auto llama = models().back().second();
  auto kv = llama->make_cache(2);
  llama->forward_slots(at::zeros({1, 3}, at::kLong), kv, {0});
  EXPECT_EQ(lintime::testing::error_of([&] { llama->forward(at::zeros({2, 1}, at::kLong), &kv); }),
            "decoder: the cache's slots hold sequences of different lengths, which this model's layers cannot "
            "continue together (use forward_slots)");
}

}  // namespace
