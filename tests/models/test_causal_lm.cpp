// CausalLm (the decoding wrapper of the commands): a prompt prefilled in position chunks (a
// large batch's bounded activation memory) gives the full forward's last logits, and the decode
// steps after it continue the full forward — GSA (grouped queries, short conv) and Llama /
// Mistral (a window shorter than a chunk, with and without a reserved KV cache). fp64.
#include "models/causal_lm.h"
#include "models/gsa_model.h"
#include "models/llama_model.h"

#include "support/test_support.h"
#include "support/trained_magnitudes.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace {

using lintime::models::CausalLm;
using lintime::testing::relative_max_error;

// fp64 weights at trained magnitudes.
void trained_like(lintime::layers::Module& model, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  model.to(c10::Device(c10::kCPU), at::kDouble);
  lintime::testing::set_trained_magnitudes(model, generator);
}

std::unique_ptr<CausalLm> tiny_gsa(uint64_t seed) {
  lintime::models::GsaConfig config;
  config.vocab_size = 61;
  config.hidden_size = 32;
  config.num_hidden_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.num_slots = 8;
  config.use_short_conv = true;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto model = std::make_unique<lintime::models::GsaModel>(config, generator);
  trained_like(*model, seed);
  return lintime::models::as_causal_lm(std::move(model));
}

std::unique_ptr<CausalLm> tiny_llama(std::optional<int64_t> window, uint64_t seed) {
  lintime::models::LlamaConfig config;
  config.model_type = window ? "mistral" : "llama";
  config.vocab_size = 61;
  config.hidden_size = 32;
  config.intermediate_size = 40;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.sliding_window = window;
  config.validate();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto model = std::make_unique<lintime::models::LlamaModel>(config, generator);
  trained_like(*model, seed);
  return lintime::models::as_causal_lm(std::move(model));
}

struct Case {
  std::string name;
  std::function<std::unique_ptr<CausalLm>()> make;
  int64_t reserve;  // total_tokens given to prefill (0: unknown)
};

TEST(CausalLm, ChunkedPrefillThenStepsEqualsFullForward) {
  at::NoGradGuard no_grad;
  const std::vector<Case> cases = {{"gsa", [] { return tiny_gsa(3); }, 0},
                                   {"llama reserved", [] { return tiny_llama(std::nullopt, 4); }, 160},
                                   {"llama growing", [] { return tiny_llama(std::nullopt, 4); }, 0},
                                   {"mistral window 5", [] { return tiny_llama(5, 5); }, 160}};
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor ids = at::randint(0, 61, {2, 155}, generator, at::kLong);
  const int64_t prompt = 150;  // chunks of 64, 64 and 22 positions at 64 tokens per chunk
  for (const Case& c : cases) {
    auto model = c.make();
    const at::Tensor full = model->forward(ids);  // [2, 155, 61]
    for (int64_t tokens_per_chunk : {int64_t{64}, int64_t{1} << 20}) {
      model->set_prefill_tokens_per_chunk(tokens_per_chunk);
      std::vector<at::Tensor> logits = {model->prefill(ids.narrow(1, 0, prompt), c.reserve)};
      for (int64_t t = prompt; t < ids.size(1) - 1; ++t) logits.push_back(model->step(ids.select(1, t)));
      const at::Tensor expected = full.narrow(1, prompt - 1, ids.size(1) - prompt);
      EXPECT_LT(relative_max_error(at::stack(logits, 1), expected), 1e-10)
          << c.name << ", " << tokens_per_chunk << " tokens per chunk";
    }
  }
}

TEST(CausalLm, PrefillChunkSizeMustBePositive) {
  auto model = tiny_gsa(1);
  EXPECT_THROW(model->set_prefill_tokens_per_chunk(0), std::exception);
  EXPECT_TRUE(model->steps_are_replayable());  // GSA: every state tensor updated in place
}

}  // namespace
