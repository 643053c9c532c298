#include "models/causal_lm.h"

#include "core/error.h"

namespace lintime::models {
namespace {

class GsaCausalLm : public CausalLm {
 public:
  explicit GsaCausalLm(std::unique_ptr<GsaModel> model) : model_(std::move(model)), cache_(model_->make_cache(1)) {}
  at::Tensor forward(const at::Tensor& input_ids) override { return model_->forward(input_ids); }
  at::Tensor prefill(const at::Tensor& input_ids) override {
    cache_ = model_->make_cache(input_ids.size(0));
    return model_->prefill(input_ids, cache_);
  }
  at::Tensor step(const at::Tensor& tokens) override { return model_->step(tokens, cache_); }
  int64_t logits_width() const override { return model_->config().vocab_size; }
  int64_t vocab_size() const override { return model_->config().vocab_size; }
  int64_t state_bytes_per_sequence() const override { return GsaModel::state_bytes_per_sequence_for(model_->config()); }
  std::string name() const override { return "GSA (fla)"; }

 private:
  std::unique_ptr<GsaModel> model_;
  state::InferenceCache cache_;
};

class BasedCausalLm : public CausalLm {
 public:
  explicit BasedCausalLm(std::unique_ptr<BasedModel> model) : model_(std::move(model)) {}
  at::Tensor forward(const at::Tensor& input_ids) override { return model_->forward(input_ids); }
  at::Tensor prefill(const at::Tensor& input_ids) override {
    cache_ = state::BasedCache();
    return model_->prefill(input_ids, cache_);
  }
  at::Tensor step(const at::Tensor& tokens) override { return model_->step(tokens, cache_); }
  int64_t logits_width() const override { return model_->config().padded_vocab_size(); }
  int64_t vocab_size() const override { return model_->config().padded_vocab_size(); }
  int64_t state_bytes_per_sequence() const override { return BasedModel::state_bytes_per_sequence_for(model_->config()); }
  std::string name() const override { return "BASED (HazyResearch)"; }

 private:
  std::unique_ptr<BasedModel> model_;
  state::BasedCache cache_;
};

}  // namespace

std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<GsaModel> model) {
  LINTIME_CHECK(model != nullptr, "as_causal_lm: no model");
  return std::make_unique<GsaCausalLm>(std::move(model));
}

std::unique_ptr<CausalLm> as_causal_lm(std::unique_ptr<BasedModel> model) {
  LINTIME_CHECK(model != nullptr, "as_causal_lm: no model");
  return std::make_unique<BasedCausalLm>(std::move(model));
}

}  // namespace lintime::models
