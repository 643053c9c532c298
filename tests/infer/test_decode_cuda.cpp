// Decoding on a GPU. GSA with CUDA graphs (infer/decode_steps.h): steps recorded once and
// replayed give the eager steps' logits, follow the float64 model, and a new prefill (new state
// tensors, another batch) records anew. Llama with grouped-query heads in bf16: the decode
// steps (torch's flash kernel straight, not SDPA's cuDNN choice) are as close to the float64
// model as the bf16 full forward is. A server's batched steps through recorded buckets
// (infer/slot_steps.h) give forward_slots' logits and states, the Transformer++'s (its KV cache
// continued in place) as close to float64 as forward_slots'. Label `cuda`: `ctest -L cuda` on a
// GPU machine.
#include "infer/decode_steps.h"
#include "infer/slot_steps.h"
#include "models/causal_lm.h"
#include "models/gsa_model.h"
#include "models/llama_model.h"

#include "support/test_support.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using lintime::models::CausalLm;
using lintime::testing::relative_max_error;
using lintime::testing::relative_rms_error;

std::unique_ptr<lintime::models::GsaModel> tiny_gsa(at::ScalarType dtype, const c10::Device& device) {
  lintime::models::GsaConfig config;
  config.vocab_size = 61;
  config.hidden_size = 64;
  config.num_hidden_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.num_slots = 16;
  config.use_short_conv = true;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(5);
  auto model = std::make_unique<lintime::models::GsaModel>(config, generator);
  at::NoGradGuard no_grad;
  model->for_each_parameter([&](const std::string& name, at::Tensor& parameter) {
    if (name.find("norm") != std::string::npos) {
      parameter.uniform_(0.5, 2.0, generator);
    } else if (parameter.dim() == 2) {
      parameter.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(parameter.size(1))), generator);
    }
  });
  model->to(device, dtype);
  return model;
}

// Greedy-free decoding: the given ids are fed one by one after a prefill of `prompt` tokens.
template <class Steps>
std::vector<at::Tensor> decode(Steps& model, const at::Tensor& ids, int64_t prompt) {
  std::vector<at::Tensor> logits = {model.prefill(ids.narrow(1, 0, prompt), ids.size(1)).cpu()};
  for (int64_t t = prompt; t < ids.size(1) - 1; ++t) logits.push_back(model.step(ids.select(1, t)).cpu());
  return logits;
}

TEST(DecodeGraphCuda, ReplayedStepsEqualEagerStepsAndFollowTheFloat64Model) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::NoGradGuard no_grad;
  const c10::Device cuda(c10::kCUDA, 0);
  auto eager = lintime::models::as_causal_lm(tiny_gsa(at::kFloat, cuda));
  auto graphed_model = lintime::models::as_causal_lm(tiny_gsa(at::kFloat, cuda));
  lintime::infer::DecodeSteps graphed(*graphed_model, true);
  auto reference = tiny_gsa(at::kDouble, c10::Device(c10::kCPU));
  ASSERT_TRUE(graphed.graphed());
  for (int64_t batch : {3, 5}) {  // the second prefill changes the state tensors and the batch
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(batch);
    const at::Tensor ids = at::randint(0, 61, {batch, 40}, generator, at::kLong);
    const auto eager_logits = decode(*eager, ids.to(cuda), 20);
    const auto graphed_logits = decode(graphed, ids.to(cuda), 20);
    const at::Tensor expected = reference->forward(ids).narrow(1, 19, 20);  // [B, 20, V] fp64
    const at::Tensor graphed_all = at::stack(graphed_logits, 1);
    // The replay launches the eager step's kernels on the same inputs: equal to rounding.
    EXPECT_LT(relative_max_error(graphed_all, at::stack(eager_logits, 1)), 1e-6) << "batch " << batch;
    // fp32 through 2 blocks and 20 steps against fp64: a few hundred ulps of the largest logit.
    EXPECT_LT(relative_max_error(graphed_all.to(at::kDouble), expected), 1e-4) << "batch " << batch;
  }
}

TEST(SlotStepsCuda, RecordedBucketsGiveForwardSlotsLogitsAndStates) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::NoGradGuard no_grad;
  const c10::Device cuda(c10::kCUDA, 0);
  auto model = tiny_gsa(at::kFloat, cuda);
  constexpr int64_t kSequences = 6;  // buckets 1, 2, 4, 6; slot 6 pads
  auto reference = model->make_cache(kSequences);
  auto bucketed = model->make_cache(kSequences + 1);
  bucketed.withhold(kSequences);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(9);
  for (int64_t s = 0; s < kSequences; ++s) {
    ASSERT_EQ(reference.admit(), s);
    ASSERT_EQ(bucketed.admit(), s);
    const at::Tensor prompt = at::randint(0, 61, {1, 5 + 3 * s}, generator, at::kLong).to(cuda);
    model->forward_slots(prompt, reference, {s});
    model->forward_slots(prompt, bucketed, {s});
  }
  lintime::infer::SlotSteps steps(*model, bucketed, kSequences, kSequences);
  // Each slot set twice: the first use of a bucket records it, later ones replay it.
  const std::vector<std::vector<int64_t>> slot_sets = {{1}, {5, 0, 2}, {0, 1, 2, 3, 4, 5}, {3, 4},
                                                       {2},  {4, 1, 5}, {5, 4, 3, 2, 1, 0}, {0, 5}};
  for (const auto& slots : slot_sets) {
    std::vector<int64_t> tokens;
    for (size_t i = 0; i < slots.size(); ++i) tokens.push_back(at::randint(0, 61, {1}, generator).item<int64_t>());
    const at::Tensor expected =
        model->forward_slots(at::tensor(tokens, at::kLong).unsqueeze(1).to(cuda), reference, slots).select(1, 0);
    const at::Tensor got = steps.step(tokens, slots);
    // The same kernels on the same rows, in a batch of another size: equal to fp32 rounding.
    EXPECT_LT(relative_max_error(got, expected), 1e-5) << slots.size() << " rows";
  }
  EXPECT_EQ(steps.recorded_buckets(), 4);
  for (int64_t i = 0; i < bucketed.num_layers(); ++i) {
    auto got = bucketed.layer(i).tensors();
    auto want = reference.layer(i).tensors();
    for (size_t j = 0; j < got.size(); ++j) {
      if (!want[j]->defined()) continue;
      EXPECT_LT(relative_max_error(got[j]->narrow(0, 0, kSequences), *want[j]), 1e-5) << "layer " << i << " tensor " << j;
    }
  }
}

std::unique_ptr<lintime::models::LlamaModel> tiny_llama(at::ScalarType dtype, const c10::Device& device,
                                                       std::optional<int64_t> sliding_window = std::nullopt) {
  lintime::models::LlamaConfig config;
  if (sliding_window) config.model_type = "mistral";
  config.sliding_window = sliding_window;
  config.vocab_size = 61;
  config.hidden_size = 128;
  config.intermediate_size = 160;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.validate();  // head_dim 32
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(8);
  auto model = std::make_unique<lintime::models::LlamaModel>(config, generator);
  at::NoGradGuard no_grad;
  model->for_each_parameter([&](const std::string& name, at::Tensor& parameter) {
    if (name.find("norm") != std::string::npos) {
      parameter.uniform_(0.5, 2.0, generator);
    } else if (parameter.dim() == 2) {
      parameter.normal_(0.0, name.find("embed") != std::string::npos ? 1.0 : 1.0 / std::sqrt(parameter.size(1)),
                        generator);
    }
  });
  model->to(device, dtype);
  return model;
}

TEST(LlamaDecodeCuda, Bf16FlashDecodeStepsAreAsCloseToFloat64AsTheFullForward) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::NoGradGuard no_grad;
  const c10::Device cuda(c10::kCUDA, 0);
  auto model = lintime::models::as_causal_lm(tiny_llama(at::kBFloat16, cuda));
  auto reference = tiny_llama(at::kDouble, c10::Device(c10::kCPU));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor ids = at::randint(0, 61, {3, 90}, generator, at::kLong);
  const at::Tensor expected = reference->forward(ids).narrow(1, 49, 40);                    // [B, 40, V]
  const at::Tensor full_bf16 = model->forward(ids.to(cuda)).narrow(1, 49, 40).cpu().to(at::kDouble);
  const at::Tensor decoded = at::stack(decode(*model, ids.to(cuda), 50), 1).to(at::kDouble);
  const double full_error = relative_rms_error(full_bf16, expected);
  const double decode_error = relative_rms_error(decoded, expected);
  std::printf("bf16 relative RMS error vs fp64: full forward %.3g, prefill + decode %.3g\n", full_error, decode_error);
  EXPECT_LT(decode_error, 2.0 * full_error + 1e-3);
  EXPECT_LT(decode_error, 5e-2);  // bf16 (8-bit mantissa) through 2 blocks
}

// A server's running batch on a GPU: slots holding different numbers of tokens continue together
// through FlashAttention's varlen kernel reading each slot's keys in place (a 4-token chunk, then
// single-token steps), for Llama and for Mistral's sliding window. Each row is as close to the
// float64 model as the bf16 full forward of its sequence.
TEST(LlamaDecodeCuda, Bf16SlotRowsAtDifferentLengthsAreAsCloseToFloat64AsTheFullForward) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::NoGradGuard no_grad;
  const c10::Device cuda(c10::kCUDA, 0);
  for (std::optional<int64_t> window : {std::optional<int64_t>(), std::optional<int64_t>(24)}) {
    auto model = tiny_llama(at::kBFloat16, cuda, window);
    auto reference = tiny_llama(at::kDouble, c10::Device(c10::kCPU), window);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(3);
    const std::vector<int64_t> cached = {40, 17, 63};
    constexpr int64_t kChunk = 4, kSteps = 5;
    auto cache = model->make_cache(5);
    std::vector<int64_t> slots;
    std::vector<at::Tensor> ids;  // each row's whole sequence [cached + kChunk + kSteps]
    for (int64_t length : cached) {
      ids.push_back(at::randint(0, 61, {length + kChunk + kSteps}, generator, at::kLong));
      slots.push_back(cache.admit());
      model->forward_slots(ids.back().narrow(0, 0, length).unsqueeze(0).to(cuda), cache, {slots.back()});
    }
    std::vector<std::vector<at::Tensor>> got(cached.size());  // per row: [kChunk, V], then [1, V] per step
    auto run = [&](int64_t offset, int64_t tokens) {
      std::vector<at::Tensor> rows;
      for (size_t r = 0; r < cached.size(); ++r) rows.push_back(ids[r].narrow(0, cached[r] + offset, tokens));
      const at::Tensor logits = model->forward_slots(at::stack(rows).to(cuda), cache, slots).cpu().to(at::kDouble);
      for (size_t r = 0; r < cached.size(); ++r) got[r].push_back(logits.select(0, static_cast<int64_t>(r)));
    };
    run(0, kChunk);
    for (int64_t step = 0; step < kSteps; ++step) run(kChunk + step, 1);
    for (size_t r = 0; r < cached.size(); ++r) {
      const int64_t first = cached[r], count = kChunk + kSteps;
      const at::Tensor expected = reference->forward(ids[r].unsqueeze(0)).select(0, 0).narrow(0, first, count);
      const at::Tensor full_bf16 =
          model->forward(ids[r].unsqueeze(0).to(cuda)).select(0, 0).narrow(0, first, count).cpu().to(at::kDouble);
      const double full_error = relative_rms_error(full_bf16, expected);
      const double slot_error = relative_rms_error(at::cat(got[r], 0), expected);
      std::printf("window %lld, row %zu (%lld cached): bf16 relative RMS error vs fp64: full %.3g, slot rows %.3g\n",
                  static_cast<long long>(window.value_or(0)), r, static_cast<long long>(first), full_error, slot_error);
      EXPECT_LT(slot_error, 2.0 * full_error + 1e-3) << "window " << window.value_or(0) << " row " << r;
      EXPECT_LT(slot_error, 5e-2);
    }
  }
}

// The Transformer++'s server steps through recorded buckets: its KV cache is continued in place
// (not staged), with lengths on the device and keys bounded by the capacity, and grows from 32
// to 64 positions between replays (room reserved on the host). Every step's bf16 logits are as
// close to the float64 model as forward_slots' are, with and without a sliding window.
TEST(SlotStepsCuda, RecordedTransformerBucketsFollowFloat64AsForwardSlotsDoes) {
  LINTIME_SKIP_WITHOUT_CUDA();
  at::NoGradGuard no_grad;
  const c10::Device cuda(c10::kCUDA, 0);
  for (std::optional<int64_t> window : {std::optional<int64_t>(), std::optional<int64_t>(24)}) {
    auto model = tiny_llama(at::kBFloat16, cuda, window);
    auto reference = tiny_llama(at::kDouble, c10::Device(c10::kCPU), window);
    ASSERT_TRUE(model->slot_steps_are_replayable());
    constexpr int64_t kSequences = 6;  // buckets 1, 2, 4, 6; slot 6 pads
    auto unrecorded = model->make_cache(kSequences);
    auto bucketed = model->make_cache(kSequences + 1);
    bucketed.withhold(kSequences);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(11);
    std::vector<std::vector<int64_t>> sequence(kSequences);  // each slot's tokens so far
    std::vector<int64_t> prompt_length(kSequences);
    for (int64_t s = 0; s < kSequences; ++s) {
      ASSERT_EQ(unrecorded.admit(), s);
      ASSERT_EQ(bucketed.admit(), s);
      prompt_length[s] = 5 + 4 * s;  // 5 to 25 tokens
      const at::Tensor prompt = at::randint(0, 61, {1, prompt_length[s]}, generator, at::kLong);
      for (int64_t t = 0; t < prompt_length[s]; ++t) sequence[s].push_back(prompt[0][t].item<int64_t>());
      model->forward_slots(prompt.to(cuda), unrecorded, {s});
      model->forward_slots(prompt.to(cuda), bucketed, {s});
    }
    lintime::infer::SlotSteps steps(*model, bucketed, kSequences, kSequences);
    const int64_t first_capacity = bucketed.layer(0).tensors()[0]->size(1);
    std::vector<std::vector<at::Tensor>> got(kSequences), unrecorded_got(kSequences);  // [V] per step
    const std::vector<std::vector<int64_t>> one_round = {{1}, {5, 0, 2}, {0, 1, 2, 3, 4, 5}, {3, 4},
                                                         {2}, {4, 1, 5}, {5, 4, 3, 2, 1, 0}, {0, 5}};
    for (int round = 0; round < 3; ++round) {
      for (const auto& slots : one_round) {
        std::vector<int64_t> tokens;
        for (int64_t slot : slots) {
          tokens.push_back(at::randint(0, 61, {1}, generator).item<int64_t>());
          sequence[slot].push_back(tokens.back());
        }
        const at::Tensor logits = steps.step(tokens, slots).cpu().to(at::kDouble);
        const at::Tensor expected =
            model->forward_slots(at::tensor(tokens, at::kLong).unsqueeze(1).to(cuda), unrecorded, slots)
                .select(1, 0).cpu().to(at::kDouble);
        for (size_t r = 0; r < slots.size(); ++r) {
          got[slots[r]].push_back(logits.select(0, static_cast<int64_t>(r)));
          unrecorded_got[slots[r]].push_back(expected.select(0, static_cast<int64_t>(r)));
        }
      }
    }
    EXPECT_EQ(steps.recorded_buckets(), 4);
    EXPECT_GT(bucketed.layer(0).tensors()[0]->size(1), first_capacity) << "the cache grew during the steps";
    for (int64_t s = 0; s < kSequences; ++s) {
      const int64_t count = static_cast<int64_t>(got[s].size());
      const at::Tensor expected = reference->forward(at::tensor(sequence[s], at::kLong).unsqueeze(0))
                                      .select(0, 0).narrow(0, prompt_length[s], count);
      const double recorded_error = relative_rms_error(at::stack(got[s]), expected);
      const double unrecorded_error = relative_rms_error(at::stack(unrecorded_got[s]), expected);
      std::printf("window %lld, slot %lld (%lld steps): bf16 relative RMS error vs fp64: forward_slots %.3g, "
                  "recorded buckets %.3g\n", static_cast<long long>(window.value_or(0)), static_cast<long long>(s),
                  static_cast<long long>(count), unrecorded_error, recorded_error);
      EXPECT_LT(recorded_error, 2.0 * unrecorded_error + 1e-3) << "window " << window.value_or(0) << " slot " << s;
      EXPECT_LT(recorded_error, 5e-2);
    }
  }
}

}  // namespace
