// The generation library: greedy generation equals a full forward per step for every sequence
// of a batch (GSA from its recurrent state, Llama from its KV cache), a sequence stops at EOS
// while the others go on, the budget and the choosable columns hold, seeded sampling repeats;
// text streams only whole UTF-8 characters.
#include "infer/generate.h"
#include "infer/text_stream.h"
#include "models/gsa_model.h"
#include "models/llama_model.h"

#include "support/test_support.h"
#include "support/trained_magnitudes.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace {

using lintime::infer::GenerateOptions;
using lintime::infer::GenerateResult;
using lintime::testing::error_of;

constexpr int64_t kVocab = 61;

// A tiny model at trained magnitudes (fp64, so that greedy choices are not near ties), the bare
// model for full forwards beside its decoding wrapper.
struct TinyModel {
  std::function<at::Tensor(const at::Tensor&)> forward;
  std::unique_ptr<lintime::models::CausalLm> lm;
};

template <class Model, class Config>
TinyModel tiny(const Config& config, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto model = std::make_unique<Model>(config, generator);
  model->to(c10::Device(c10::kCPU), at::kDouble);
  lintime::testing::set_trained_magnitudes(*model, generator);
  Model* raw = model.get();
  return {[raw](const at::Tensor& ids) { return raw->forward(ids); }, lintime::models::as_causal_lm(std::move(model))};
}

TinyModel tiny_gsa() {
  lintime::models::GsaConfig config;
  config.vocab_size = kVocab;
  config.hidden_size = 32;
  config.num_hidden_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.num_slots = 8;
  return tiny<lintime::models::GsaModel>(config, 3);
}

TinyModel tiny_llama() {
  lintime::models::LlamaConfig config;
  config.vocab_size = kVocab;
  config.hidden_size = 32;
  config.intermediate_size = 40;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.validate();
  return tiny<lintime::models::LlamaModel>(config, 4);
}

// Greedy continuation of each row of `prompt` by one full forward per new token.
std::vector<std::vector<int64_t>> greedy_by_full_forward(const TinyModel& model, const at::Tensor& prompt, int64_t steps,
                                                         int64_t choices) {
  at::NoGradGuard no_grad;
  std::vector<std::vector<int64_t>> out(prompt.size(0));
  at::Tensor sequence = prompt.clone();
  for (int64_t step = 0; step < steps; ++step) {
    const at::Tensor next = model.forward(sequence).select(1, -1).slice(-1, 0, choices).argmax(-1);  // [B]
    for (int64_t b = 0; b < prompt.size(0); ++b) out[b].push_back(next[b].item<int64_t>());
    sequence = at::cat({sequence, next.unsqueeze(1)}, 1);
  }
  return out;
}

class GenerateEqualsFullForward : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerateEqualsFullForward, GreedyForEverySequenceOfABatch) {
  TinyModel model = GetParam() == "gsa" ? tiny_gsa() : tiny_llama();
  const at::Tensor prompt = at::randint(kVocab, {3, 9}, lintime::testing::make_generator(5), at::kLong);
  GenerateOptions options;
  options.max_new_tokens = 12;
  options.sampling.greedy = true;
  options.choices = kVocab - 5;  // the last columns are never chosen
  int64_t calls = 0;
  const GenerateResult result = lintime::infer::generate(*model.lm, prompt, options, [&](const GenerateResult& so_far) {
    ++calls;
    EXPECT_EQ(static_cast<int64_t>(so_far.tokens[0].size()), calls);
  });
  EXPECT_EQ(result.steps, 12);
  EXPECT_EQ(calls, 12);
  EXPECT_EQ(result.tokens, greedy_by_full_forward(model, prompt, 12, kVocab - 5));
  EXPECT_GE(result.seconds, result.first_token_seconds);
}

INSTANTIATE_TEST_SUITE_P(Models, GenerateEqualsFullForward, ::testing::Values("gsa", "llama"));

TEST(Generate, ASequenceStopsAtEosAndTheOthersGoOn) {
  TinyModel model = tiny_gsa();
  const at::Tensor prompt = at::randint(kVocab, {2, 7}, lintime::testing::make_generator(6), at::kLong);
  const auto expected = greedy_by_full_forward(model, prompt, 10, kVocab);
  GenerateOptions options;
  options.max_new_tokens = 10;
  options.sampling.greedy = true;
  options.eos = expected[0][3];  // sequence 0 stops at its fourth token
  const GenerateResult result = lintime::infer::generate(*model.lm, prompt, options);
  size_t stop = 0;
  while (expected[0][stop] != *options.eos) ++stop;
  EXPECT_EQ(result.tokens[0], std::vector<int64_t>(expected[0].begin(), expected[0].begin() + stop));
  EXPECT_TRUE(result.finished[0]);
  // Sequence 1 runs on to the budget unless it meets the same token.
  std::vector<int64_t> other;
  for (int64_t token : expected[1]) {
    if (token == *options.eos) break;
    other.push_back(token);
  }
  EXPECT_EQ(result.tokens[1], other);
  EXPECT_EQ(result.finished[1], other.size() < expected[1].size());
}

TEST(Generate, SeededSamplingRepeatsAndBadOptionsAreNamed) {
  TinyModel model = tiny_gsa();
  const at::Tensor prompt = at::randint(kVocab, {2, 5}, lintime::testing::make_generator(7), at::kLong);
  GenerateOptions options;
  options.max_new_tokens = 8;
  options.sampling.temperature = 1.5;
  options.sampling.top_k = 20;
  options.seed = 11;
  const auto first = lintime::infer::generate(*model.lm, prompt, options).tokens;
  EXPECT_EQ(lintime::infer::generate(*model.lm, prompt, options).tokens, first);
  options.seed = 12;
  EXPECT_NE(lintime::infer::generate(*model.lm, prompt, options).tokens, first);
  options.max_new_tokens = 0;
  EXPECT_EQ(error_of([&] { lintime::infer::generate(*model.lm, prompt, options); }),
            "generate: max_new_tokens must be >= 1, got 0");
  options.max_new_tokens = 4;
  EXPECT_EQ(error_of([&] { lintime::infer::generate(*model.lm, prompt.select(0, 0), options); }),
            "generate: the prompt must be token ids of shape [B, T] with B, T >= 1");
}

TEST(TextStream, ReleasesOnlyWholeUtf8Characters) {
  EXPECT_EQ(lintime::infer::complete_utf8_prefix("ab"), 2u);
  EXPECT_EQ(lintime::infer::complete_utf8_prefix("a\xC3"), 1u);                  // é cut after its lead byte
  EXPECT_EQ(lintime::infer::complete_utf8_prefix("a\xE6\x97"), 1u);              // 日 missing its last byte
  EXPECT_EQ(lintime::infer::complete_utf8_prefix("a\xF0\x9F\x98\x80"), 5u);      // 😀 whole
  // One byte per token: "é日" arrives as five tokens.
  const std::string text = "\xC3\xA9\xE6\x97\xA5";
  lintime::infer::TextStream stream([&](const std::vector<int64_t>& tokens) {
    std::string out;
    for (int64_t token : tokens) out += text[token];
    return out;
  });
  std::vector<int64_t> tokens;
  std::vector<std::string> released;
  for (int64_t i = 0; i < 5; ++i) {
    tokens.push_back(i);
    released.push_back(stream.push(tokens));
  }
  EXPECT_EQ(released, (std::vector<std::string>{"", "\xC3\xA9", "", "", "\xE6\x97\xA5"}));
  EXPECT_EQ(stream.finish(tokens), "");
  lintime::infer::TextStream cut([&](const std::vector<int64_t>& ids) { return ids.empty() ? "" : std::string("x\xE6\x97"); });
  EXPECT_EQ(cut.push({0}), "x");
  EXPECT_EQ(cut.finish({0}), "\xE6\x97");  // the end releases what is left
}

// A long stream costs time linear in its length: each push decodes a window of the newest
// tokens, and the pieces join to the whole decode — with byte tokens that split characters, and
// with a decoder that drops a leading space (SentencePiece) whatever token a decode starts at.
TEST(TextStream, DecodesAWindowAndJoinsToTheWholeText) {
  // Token t is "▁w" for even t (a word with its space) or a byte of a 3-byte character.
  const std::string character = "\xE6\x97\xA5";
  for (bool drop_leading_space : {false, true}) {
    int64_t decoded_tokens = 0;
    const auto decode = [&](const std::vector<int64_t>& ids) {
      decoded_tokens += static_cast<int64_t>(ids.size());
      std::string out;
      for (int64_t id : ids) out += id % 4 == 3 ? std::string(" w") : std::string(1, character[id % 4]);
      if (drop_leading_space && !out.empty() && out[0] == ' ') out.erase(0, 1);
      return out;
    };
    lintime::infer::TextStream stream(decode);
    std::vector<int64_t> tokens;
    std::string joined;
    const int64_t length = 4000;
    for (int64_t i = 0; i < length; ++i) {
      tokens.push_back(i);
      joined += stream.push(tokens);
    }
    joined += stream.finish(tokens);
    EXPECT_EQ(joined, decode(tokens)) << "drop_leading_space " << drop_leading_space;
    EXPECT_EQ(stream.text(), joined);
    // Two window decodes per push of at most a few tokens each; decoding everything at every
    // push would be length²/2 = 8e6 tokens.
    EXPECT_LE(decoded_tokens, 12 * length + length) << "drop_leading_space " << drop_leading_space;
  }
}

}  // namespace
