#include "models/causal_lm.h"

#include "core/error.h"

#include <algorithm>
#include <utility>

namespace lintime::models {
namespace {

// Runs `hidden_of(chunk)` over consecutive position chunks of input_ids [B, T] (each continuing
// the cache; see CausalLm::set_prefill_tokens_per_chunk) and returns the last position's
// hidden state [B, d].
template <typename HiddenOf>
at::Tensor prefill_in_chunks(const at::Tensor& input_ids, int64_t tokens_per_chunk, HiddenOf&& hidden_of) {
  TORCH_CHECK(input_ids.dim() == 2 && input_ids.size(1) > 0, "prefill: input_ids must be [B, T] with T > 0, got ",
              input_ids.sizes());
  const int64_t length = input_ids.size(1);
  const int64_t positions = std::max<int64_t>(64, tokens_per_chunk / input_ids.size(0) / 64 * 64);
  at::Tensor last;
  for (int64_t start = 0; start < length; start += positions) {
    last = hidden_of(input_ids.narrow(1, start, std::min(positions, length - start))).select(1, -1);
  }
  return last;
}

class DecoderCausalLm : public CausalLm {
 public:
  explicit DecoderCausalLm(std::unique_ptr<Decoder> model) : model_(std::move(model)), cache_(model_->make_cache(1)) {}
  at::Tensor forward(const at::Tensor& input_ids) override { return model_->forward(input_ids); }
  at::Tensor prefill(const at::Tensor& input_ids, int64_t total_tokens) override {
    LINTIME_CHECK(input_ids.dim() == 2, "prefill: input_ids must be [B, T], got ", input_ids.sizes());
    cache_ = model_->make_cache(input_ids.size(0), total_tokens);
    // A model whose prefill cannot be continued (BASED's sliding window) takes the prompt whole.
    const int64_t tokens_per_chunk =
        model_->prefills_continue() ? prefill_tokens_per_chunk() : input_ids.size(0) * (input_ids.size(1) + 64);
    return model_->logits(prefill_in_chunks(input_ids, tokens_per_chunk, [this](const at::Tensor& chunk) {
      return model_->hidden_states(chunk, &cache_);
    }));
  }
  at::Tensor step(const at::Tensor& tokens) override { return model_->step(tokens, cache_); }
  bool steps_are_replayable() const override { return model_->steps_are_replayable(); }
  void recount_tokens(int64_t tokens) override { cache_.advance(tokens); }
  int64_t logits_width() const override { return model_->decoder_config().vocab_size; }
  int64_t vocab_size() const override { return model_->decoder_config().vocab_size; }
  int64_t state_bytes_per_sequence(int64_t tokens) const override { return model_->state_bytes_after(tokens); }
  int64_t state_bytes_in_use() const override { return cache_.allocated_bytes(); }
  std::string name() const override { return model_->decoder_config().description; }
  layers::Module& module() override { return *model_; }
  Decoder& decoder() override { return *model_; }

 private:
  std::unique_ptr<Decoder> model_;
  state::Cache cache_;
};

}  // namespace

void CausalLm::set_prefill_tokens_per_chunk(int64_t tokens) {
  LINTIME_CHECK(tokens >= 1, "prefill tokens per chunk must be >= 1, got ", tokens);
  prefill_tokens_per_chunk_ = tokens;
}

std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<Decoder> model) {
  LINTIME_CHECK(model != nullptr, "as_causal_lm: no model");
  return std::make_unique<DecoderCausalLm>(std::move(model));
}


}  // namespace lintime::models
