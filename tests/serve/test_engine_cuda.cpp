// The serving engine on a GPU: a GSA model's batched decode steps run through buckets recorded
// as CUDA graphs (EngineOptions::StepMode::kAuto), and concurrent greedy requests that join and
// leave the running batch get the tokens infer::generate gives each alone. Label `cuda`.
#include "serve/engine.h"

#include "infer/generate.h"
#include "support/decoder_models.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace {

using lintime::serve::Engine;
using lintime::serve::EngineOptions;
using lintime::serve::GenerationRequest;
using lintime::serve::Stream;
using namespace std::chrono_literals;

TEST(EngineCuda, GraphedBucketStepsGiveWhatGenerateGivesAlone) {
  LINTIME_SKIP_WITHOUT_CUDA();
  constexpr int64_t kVocab = lintime::testing::kDecoderTestVocab;
  // The tests' tiny GSA (short convolutions, trained magnitudes) in fp32 on the GPU.
  auto decoder = lintime::testing::decoder_test_models().front().second();
  decoder->to(c10::Device(c10::kCUDA, 0), at::kFloat);
  auto model = lintime::models::as_causal_lm(std::move(decoder));

  at::Generator ids = lintime::testing::make_generator(11);
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int64_t>> expected;
  for (int i = 0; i < 12; ++i) {
    GenerationRequest request;
    const at::Tensor prompt = at::randint(kVocab, {4 + 5 * (i % 4)}, ids, at::kLong);
    request.prompt.assign(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
    request.max_new_tokens = 6 + i % 5;
    request.sampling.greedy = true;
    lintime::infer::GenerateOptions options;
    options.max_new_tokens = request.max_new_tokens;
    options.sampling = request.sampling;
    options.cuda_graphs = true;
    expected.push_back(lintime::infer::generate(*model, prompt.unsqueeze(0).to(c10::Device(c10::kCUDA, 0)), options).tokens[0]);
    requests.push_back(request);
  }

  EngineOptions options;
  options.max_sequences = 6;  // buckets 1, 2, 4, 6: requests queue, join and leave
  options.prefill_chunk = 8;
  Engine engine(*model, options);
  ASSERT_TRUE(engine.bucketed_steps());
  std::vector<std::vector<int64_t>> got(requests.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i) {
    clients.emplace_back([&, i] {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 * i));
      auto stream = engine.submit(requests[i]);
      ASSERT_NE(stream, nullptr);
      Stream::Finish finish = Stream::Finish::kNone;
      const auto deadline = std::chrono::steady_clock::now() + 60s;
      while (finish == Stream::Finish::kNone && std::chrono::steady_clock::now() < deadline) {
        finish = stream->wait(got[i].size(), got[i], 100ms);
      }
      EXPECT_EQ(finish, Stream::Finish::kLength) << "request " << i << ": " << stream->error();
    });
  }
  for (auto& client : clients) client.join();
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "request " << i;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (engine.pending() > 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(engine.free_slots(), 6);
}

}  // namespace
