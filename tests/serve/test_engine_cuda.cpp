// The serving engine on a GPU: a GSA model's batched decode steps run through buckets recorded
// as CUDA graphs (EngineOptions::StepMode::kAuto), and concurrent greedy requests that join and
// leave the running batch get the tokens infer::generate gives each alone. Label `cuda`.
#include "serve/engine.h"

#include "infer/generate.h"
#include "models/gsa_model.h"

#include "support/test_support.h"
#include "support/trained_magnitudes.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace {

using lintime::serve::Engine;
using lintime::serve::EngineOptions;
using lintime::serve::GenerationRequest;
using lintime::serve::Stream;
using namespace std::chrono_literals;

constexpr int64_t kVocab = 61;

TEST(EngineCuda, GraphedBucketStepsGiveWhatGenerateGivesAlone) {
  LINTIME_SKIP_WITHOUT_CUDA();
  lintime::models::GsaConfig config;
  config.vocab_size = kVocab;
  config.hidden_size = 64;
  config.num_hidden_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.num_slots = 16;
  config.use_short_conv = true;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(3);
  auto gsa = std::make_unique<lintime::models::GsaModel>(config, generator);
  lintime::testing::set_trained_magnitudes(*gsa, generator);
  gsa->to(c10::Device(c10::kCUDA, 0), at::kFloat);
  auto model = lintime::models::as_causal_lm(std::move(gsa));

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
    expected.push_back(lintime::infer::generate(*model, prompt.unsqueeze(0), options).tokens[0]);
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
