// Next-token choice: greedy is argmax; temperature sampling follows softmax(logits / T); top-k
// and top-p keep exactly the tokens they should; the same seed repeats the draws.
#include "core/error.h"
#include "infer/sampling.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>

namespace {

using lintime::infer::choose_next_tokens;
using lintime::infer::SamplingOptions;

// Token frequencies over `draws` rows of the same logits.
std::vector<double> frequencies(const std::vector<double>& logits, const SamplingOptions& options, int64_t draws,
                                uint64_t seed = 1) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor rows = at::tensor(logits, at::kDouble).to(at::kFloat).unsqueeze(0).expand({draws, -1});
  const at::Tensor chosen = choose_next_tokens(rows, options, generator);
  std::vector<double> counts(logits.size(), 0.0);
  for (int64_t i = 0; i < draws; ++i) counts[chosen[i].item<int64_t>()] += 1.0 / draws;
  return counts;
}

TEST(Sampling, GreedyAndTemperatureZeroTakeTheArgmax) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
  const at::Tensor logits = at::tensor({0.1f, 2.0f, -1.0f, 1.9f, 0.0f, 3.0f}, at::kFloat).view({2, 3});
  SamplingOptions greedy;
  greedy.greedy = true;
  EXPECT_TRUE(at::equal(choose_next_tokens(logits, greedy, generator), at::tensor({1, 2}, at::kLong)));
  SamplingOptions cold;
  cold.temperature = 0;
  EXPECT_TRUE(at::equal(choose_next_tokens(logits, cold, generator), at::tensor({1, 2}, at::kLong)));
}

TEST(Sampling, TemperatureSamplingFollowsTheSoftmax) {
  const std::vector<double> logits = {1.0, 0.0, -1.0, 0.5};
  for (double temperature : {1.0, 2.0}) {
    SamplingOptions options;
    options.temperature = temperature;
    const auto counts = frequencies(logits, options, 40000);
    double total = 0;
    for (double l : logits) total += std::exp(l / temperature);
    for (size_t i = 0; i < logits.size(); ++i) {
      const double p = std::exp(logits[i] / temperature) / total;
      EXPECT_NEAR(counts[i], p, 4 * std::sqrt(p * (1 - p) / 40000)) << "token " << i << " T " << temperature;
    }
  }
}

TEST(Sampling, TopKAndTopPKeepTheRightTokens) {
  // Probabilities 0.4, 0.3, 0.2, 0.1 (logits are their logs).
  const std::vector<double> logits = {std::log(0.4), std::log(0.3), std::log(0.2), std::log(0.1)};
  SamplingOptions top_k;
  top_k.top_k = 2;
  auto counts = frequencies(logits, top_k, 20000);
  EXPECT_EQ(counts[2] + counts[3], 0.0);
  EXPECT_NEAR(counts[0], 0.4 / 0.7, 0.02);
  SamplingOptions top_p;
  top_p.top_p = 0.5;  // 0.4 before the second token < 0.5 keeps it; 0.7 before the third drops it
  counts = frequencies(logits, top_p, 20000);
  EXPECT_EQ(counts[2] + counts[3], 0.0);
  EXPECT_NEAR(counts[1], 0.3 / 0.7, 0.02);
  top_p.top_p = 0.3;  // only the first token
  counts = frequencies(logits, top_p, 1000);
  EXPECT_NEAR(counts[0], 1.0, 1e-9);
  // The same seed repeats the same draws.
  SamplingOptions plain;
  EXPECT_EQ(frequencies(logits, plain, 500, 9), frequencies(logits, plain, 500, 9));
}

TEST(Sampling, BadOptionsAreNamed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
  const at::Tensor logits = at::zeros({1, 4});
  auto error_of = [&](SamplingOptions options) {
    try {
      choose_next_tokens(logits, options, generator);
    } catch (const lintime::Error& error) {
      return std::string(error.what());
    }
    return std::string();
  };
  SamplingOptions options;
  options.top_p = 1.5;
  EXPECT_EQ(error_of(options), "--top-p must lie in (0, 1], got 1.5");
  options = {};
  options.temperature = -1;
  EXPECT_EQ(error_of(options), "--temperature must be >= 0, got -1");
  options = {};
  options.top_k = -2;
  EXPECT_EQ(error_of(options), "--top-k must be >= 0, got -2");
}

}  // namespace
