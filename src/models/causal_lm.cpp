#include "models/causal_lm.h"

#include "core/error.h"

#include <algorithm>

namespace lintime::models {
namespace {

class GsaCausalLm : public CausalLm {
 public:
  explicit GsaCausalLm(std::unique_ptr<GsaModel> model) : model_(std::move(model)), cache_(model_->make_cache(1)) {}
  at::Tensor forward(const at::Tensor& input_ids) override { return model_->forward(input_ids); }
  at::Tensor prefill(const at::Tensor& input_ids, int64_t) override {
    TORCH_CHECK(input_ids.dim() == 2, "prefill: input_ids must be [B, T], got ", input_ids.sizes());
    cache_ = model_->make_cache(input_ids.size(0));
    const at::Tensor hidden = model_->hidden_states(input_ids, &cache_);
    return model_->logits(hidden.select(1, -1));
  }
  at::Tensor step(const at::Tensor& tokens) override { return model_->step(tokens, cache_); }
  int64_t logits_width() const override { return model_->config().vocab_size; }
  int64_t vocab_size() const override { return model_->config().vocab_size; }
  int64_t state_bytes_per_sequence(int64_t) const override {
    return GsaModel::state_bytes_per_sequence_for(model_->config());
  }
  int64_t state_bytes_in_use() const override { return cache_.bytes(); }
  std::string name() const override { return "GSA (fla)"; }

 private:
  std::unique_ptr<GsaModel> model_;
  state::InferenceCache cache_;
};

class BasedCausalLm : public CausalLm {
 public:
  explicit BasedCausalLm(std::unique_ptr<BasedModel> model) : model_(std::move(model)) {}
  at::Tensor forward(const at::Tensor& input_ids) override { return model_->forward(input_ids); }
  at::Tensor prefill(const at::Tensor& input_ids, int64_t) override {
    cache_ = state::BasedCache();
    return model_->prefill(input_ids, cache_).select(1, -1);
  }
  at::Tensor step(const at::Tensor& tokens) override { return model_->step(tokens, cache_); }
  int64_t logits_width() const override { return model_->config().padded_vocab_size(); }
  int64_t vocab_size() const override { return model_->config().padded_vocab_size(); }
  int64_t state_bytes_per_sequence(int64_t) const override {
    return BasedModel::state_bytes_per_sequence_for(model_->config());
  }
  int64_t state_bytes_in_use() const override { return cache_.bytes(); }
  std::string name() const override { return "BASED (HazyResearch)"; }

 private:
  std::unique_ptr<BasedModel> model_;
  state::BasedCache cache_;
};

class LlamaCausalLm : public CausalLm {
 public:
  explicit LlamaCausalLm(std::unique_ptr<LlamaModel> model) : model_(std::move(model)) {}
  at::Tensor forward(const at::Tensor& input_ids) override { return model_->forward(input_ids); }
  at::Tensor prefill(const at::Tensor& input_ids, int64_t total_tokens) override {
    cache_ = model_->make_cache(total_tokens);
    return model_->logits(model_->prefill(input_ids, cache_).select(1, -1));
  }
  at::Tensor step(const at::Tensor& tokens) override { return model_->step(tokens, cache_); }
  int64_t logits_width() const override { return model_->config().vocab_size; }
  int64_t vocab_size() const override { return model_->config().vocab_size; }
  int64_t state_bytes_per_sequence(int64_t tokens) const override {
    const at::ScalarType dtype = model_->model.embed_tokens.weight.scalar_type();
    const auto& config = model_->config();
    const int64_t kept = config.sliding_window ? std::min(tokens, *config.sliding_window) : tokens;
    return kept * LlamaModel::kv_bytes_per_token_for(config, dtype);
  }
  int64_t state_bytes_in_use() const override {
    int64_t total = 0;
    for (const auto& layer : cache_.layers) total += layer.allocated_bytes();
    return total;
  }
  std::string name() const override {
    return model_->config().model_type == "mistral" ? "Mistral (Hugging Face)" : "Llama (Hugging Face)";
  }

 private:
  std::unique_ptr<LlamaModel> model_;
  state::KvCache cache_;
};

}  // namespace

std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<LlamaModel> model) {
  LINTIME_CHECK(model != nullptr, "as_causal_lm: no model");
  return std::make_unique<LlamaCausalLm>(std::move(model));
}

std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<GsaModel> model) {
  LINTIME_CHECK(model != nullptr, "as_causal_lm: no model");
  return std::make_unique<GsaCausalLm>(std::move(model));
}

std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<BasedModel> model) {
  LINTIME_CHECK(model != nullptr, "as_causal_lm: no model");
  return std::make_unique<BasedCausalLm>(std::move(model));
}

}  // namespace lintime::models
