#include "infer/generate.h"

#include "core/error.h"
#include "infer/decode_steps.h"
#include "models/decoder.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>

namespace lintime::infer {

GenerateResult generate(models::CausalLm& model, const at::Tensor& prompt, const GenerateOptions& options,
                        const std::function<void(const GenerateResult&)>& on_token) {
  LINTIME_CHECK(prompt.defined() && prompt.dim() == 2 && prompt.size(0) >= 1 && prompt.size(1) >= 1,
                "generate: the prompt must be token ids of shape [B, T] with B, T >= 1");
  LINTIME_CHECK(options.max_new_tokens >= 1, "generate: max_new_tokens must be >= 1, got ", options.max_new_tokens);
  LINTIME_CHECK(options.choices >= 0, "generate: choices must be >= 0, got ", options.choices);
  validate(options.sampling);
  at::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const int64_t batch = prompt.size(0);
  const int64_t choices = options.choices > 0 ? std::min(options.choices, model.logits_width()) : model.logits_width();
  auto allowed = [&](const at::Tensor& logits) { return logits.slice(-1, 0, choices); };

  GenerateResult result;
  result.tokens.resize(batch);
  result.finished.assign(batch, false);
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  DecodeSteps steps(model, options.cuda_graphs);
  at::Tensor logits = allowed(steps.prefill(prompt, prompt.size(1) + options.max_new_tokens));  // [B, V]
  std::vector<at::Tensor> fed = {prompt};  // for naming where non-finite logits come from
  while (true) {
    if (!at::isfinite(logits).all().item<bool>()) {
      const std::string where = model.decoder().first_non_finite(at::cat(fed, 1));
      fail("generate: the model's logits are not finite (NaN or inf) at step ", result.steps + 1, "; the first ",
           "non-finite values come from ", where.empty() ? std::string("the decoding state") : where,
           " (the weights or the inputs hold NaN or inf, or the values overflow ", c10::toString(logits.scalar_type()),
           ")");
    }
    const at::Tensor next = choose_next_tokens(logits, options.sampling, generator);  // [B] on the CPU
    if (result.steps == 0) result.first_token_seconds = elapsed();
    ++result.steps;
    bool all_finished = true;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t token = next[b].item<int64_t>();
      if (!result.finished[b]) {
        if (options.eos && token == *options.eos) {
          result.finished[b] = true;
        } else {
          result.tokens[b].push_back(token);
        }
      }
      all_finished = all_finished && result.finished[b];
    }
    result.seconds = elapsed();
    if (on_token) on_token(result);
    if (all_finished || result.steps == options.max_new_tokens) break;
    fed.push_back(next.to(prompt.device()).unsqueeze(1));
    logits = allowed(steps.step(next.to(prompt.device())));
  }
  return result;
}

}  // namespace lintime::infer
