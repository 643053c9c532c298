#include "infer/sampling.h"

#include "core/error.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace lintime::infer {

void validate(const SamplingOptions& options) {
  LINTIME_CHECK(std::isfinite(options.temperature) && options.temperature >= 0, "--temperature must be >= 0, got ",
                options.temperature);
  LINTIME_CHECK(options.top_k >= 0, "--top-k must be >= 0, got ", options.top_k);
  LINTIME_CHECK(options.top_p > 0 && options.top_p <= 1, "--top-p must lie in (0, 1], got ", options.top_p);
}

at::Tensor choose_next_tokens(const at::Tensor& logits, const SamplingOptions& options, at::Generator& generator) {
  validate(options);
  LINTIME_CHECK(logits.dim() == 2 && logits.size(1) > 0, "choose_next_tokens: logits must be [B, V]");
  at::Tensor scores = logits.detach().to(at::kCPU, at::kFloat);
  if (is_greedy(options)) return scores.argmax(-1);
  scores = scores / options.temperature;
  const double minus_infinity = -std::numeric_limits<double>::infinity();
  if (options.top_k > 0 && options.top_k < scores.size(1)) {
    const at::Tensor kth = std::get<0>(scores.topk(options.top_k, -1)).select(-1, options.top_k - 1).unsqueeze(-1);
    scores = scores.masked_fill(scores < kth, minus_infinity);
  }
  if (options.top_p < 1) {
    // Keep the most likely tokens whose probabilities before them sum to less than top_p (the
    // first token always stays).
    auto [sorted, order] = scores.sort(-1, /*descending=*/true);
    const at::Tensor probabilities = sorted.softmax(-1);
    const at::Tensor before = probabilities.cumsum(-1) - probabilities;
    const at::Tensor drop_sorted = before >= options.top_p;
    const at::Tensor drop = at::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
    scores = scores.masked_fill(drop, minus_infinity);
  }
  return at::multinomial(scores.softmax(-1), 1, /*replacement=*/false, generator).squeeze(-1);
}

}  // namespace lintime::infer
