// The BASED language model (see the header).
#include "models/based_model.h"

#include "core/error.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

namespace lintime::models {
namespace {

double out_std(const BasedConfig& config) {
  return config.initializer_range / std::sqrt(2.0 * static_cast<double>(config.num_layers));
}

}  // namespace

BasedBlock::BasedBlock(const BasedConfig& config, int64_t layer, at::Generator& generator)
    : kind(config.mixer_of(layer)),
      norm1(config.hidden_size, config.norm_eps),
      norm2(config.hidden_size, config.norm_eps),
      mlp(config.hidden_size, config.inner_size, config.initializer_range, out_std(config), generator,
          config.mlp_fc1_bias, config.mlp_fc2_bias) {
  register_module("norm1", norm1);
  switch (kind) {
    case BasedMixer::conv:
      conv = std::make_unique<layers::GatedConv>(config.hidden_size, config.conv_kernel_size, config.initializer_range,
                                                 out_std(config), generator, config.conv_bias);
      register_module("mixer", *conv);
      break;
    case BasedMixer::linear_attention: {
      layers::BasedLinearAttentionOptions options;
      options.hidden_size = config.hidden_size;
      options.feature_dim = config.feature_dim;
      options.num_heads = config.linear_attention_heads;
      options.normalize = true;
      options.eps = config.linear_attention_eps;
      options.initializer_range = config.initializer_range;
      options.out_initializer_range = out_std(config);
      linear_attention = std::make_unique<layers::BasedLinearAttention>(options, generator);
      register_module("mixer", *linear_attention);
      break;
    }
    case BasedMixer::sliding_window: {
      layers::SoftmaxAttentionOptions options;
      options.hidden_size = config.hidden_size;
      options.num_heads = config.num_heads;
      options.window = config.window;
      options.bias = config.qkv_proj_bias;
      LINTIME_CHECK(config.qkv_proj_bias == config.out_proj_bias, "BASED config: qkv_proj_bias and out_proj_bias ",
                    "must agree (lintime's sliding-window layer has one bias switch), got ", config.qkv_proj_bias,
                    " and ", config.out_proj_bias);
      options.rotary_base = config.rotary ? config.rotary_base : 0.0;
      options.initializer_range = config.initializer_range;
      options.out_initializer_range = out_std(config);
      sliding_window = std::make_unique<layers::SoftmaxAttention>(options, generator);
      register_module("mixer", *sliding_window);
      break;
    }
  }
  register_module("norm2", norm2);
  register_module("mlp", mlp);
}

at::Tensor BasedBlock::mix(const at::Tensor& x, state::BasedLayerState* s) const {
  switch (kind) {
    case BasedMixer::conv:
      if (s != nullptr && !s->conv.defined()) {
        s->conv = at::zeros({x.size(0), conv->kernel_size() - 1, 2 * x.size(2)}, x.options());
      }
      return conv->forward(x, s != nullptr ? &s->conv : nullptr);
    case BasedMixer::linear_attention:
      return s != nullptr ? linear_attention->forward_cached(x, s->state, s->normalizer) : linear_attention->forward(x);
    case BasedMixer::sliding_window:
      return s != nullptr ? sliding_window->forward_cached(x, s->key_cache, s->value_cache, s->positions)
                          : sliding_window->forward(x);
  }
  fail("BasedBlock: unknown mixer kind");
}

void BasedBlock::forward(at::Tensor& h, at::Tensor& residual, bool residual_in_fp32,
                         state::BasedLayerState* layer_state) const {
  const auto dtype = norm1.weight.scalar_type();
  auto add = [&](const at::Tensor& x) {
    at::Tensor sum = residual.defined() ? residual + x : x;
    return residual_in_fp32 && sum.scalar_type() != at::kDouble ? sum.to(at::kFloat) : sum;
  };
  residual = add(h);
  h = mix(norm1.forward(residual.to(dtype)), layer_state);
  residual = add(h);
  h = mlp.forward(norm2.forward(residual.to(dtype)));
}

BasedModel::Backbone::Embeddings::Embeddings(int64_t vocab, int64_t width, double std, at::Generator& generator)
    : word_embeddings(vocab, width, std, generator) {
  register_module("word_embeddings", word_embeddings);
}

BasedModel::Backbone::Backbone(const BasedConfig& config, at::Generator& generator)
    : embeddings(config.padded_vocab_size(), config.hidden_size, config.initializer_range, generator),
      ln_f(config.hidden_size, config.norm_eps) {
  register_module("embeddings", embeddings);
  for (int64_t i = 0; i < config.num_layers; ++i) {
    layers.push_back(std::make_unique<BasedBlock>(config, i, generator));
    register_module("layers." + std::to_string(i), *layers.back());
  }
  register_module("ln_f", ln_f);
}

BasedModel::BasedModel(const BasedConfig& config, at::Generator& generator)
    : config_((config.validate(), config)), transformer(config, generator) {
  register_module("transformer", transformer);
  if (!config.tie_word_embeddings) {
    lm_head = layers::new_parameter({config.padded_vocab_size(), config.hidden_size});
    layers::init_normal(lm_head, config.initializer_range, generator);
    register_parameter("lm_head.weight", lm_head);
  }
}

at::Tensor BasedModel::forward(const at::Tensor& input_ids) const { return run(input_ids, nullptr); }

at::Tensor BasedModel::prefill(const at::Tensor& input_ids, state::BasedCache& cache) const {
  cache.layers.assign(static_cast<size_t>(config_.num_layers), state::BasedLayerState{});
  cache.seen_tokens = 0;
  at::Tensor logits = run(input_ids, &cache);
  cache.seen_tokens = input_ids.size(1);
  return logits;
}

at::Tensor BasedModel::step(const at::Tensor& token, state::BasedCache& cache) const {
  LINTIME_CHECK(token.dim() == 1, "BasedModel::step: token must be [B], got ", token.sizes());
  LINTIME_CHECK(static_cast<int64_t>(cache.layers.size()) == config_.num_layers && cache.seen_tokens > 0,
                "BasedModel::step: the cache holds no prefill (run prefill first)");
  at::Tensor logits = run(token.unsqueeze(1), &cache).squeeze(1);
  cache.seen_tokens += 1;
  return logits;
}

at::Tensor BasedModel::run(const at::Tensor& input_ids, state::BasedCache* cache) const {
  LINTIME_CHECK(input_ids.dim() == 2, "BasedModel: input_ids must be [B, T], got ", input_ids.sizes());
  const int64_t vocab = config_.padded_vocab_size();
  LINTIME_CHECK(input_ids.numel() == 0 ||
                    (input_ids.min().item<int64_t>() >= 0 && input_ids.max().item<int64_t>() < vocab),
                "BasedModel: input_ids must be token ids in [0, ", vocab, ")");
  at::Tensor h = transformer.embeddings.word_embeddings.forward(input_ids), residual;
  for (size_t i = 0; i < transformer.layers.size(); ++i) {
    transformer.layers[i]->forward(h, residual, config_.residual_in_fp32, cache != nullptr ? &cache->layers[i] : nullptr);
  }
  residual = residual.defined() ? residual + h : h;
  const at::Tensor hidden = transformer.ln_f.forward(residual.to(transformer.ln_f.weight.scalar_type()));
  const at::Tensor head = lm_head.defined() ? lm_head : transformer.embeddings.word_embeddings.weight;
  const auto logits_dtype = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return at::matmul(hidden.to(logits_dtype), head.to(logits_dtype).t());
}

int64_t BasedModel::parameter_count_for(const BasedConfig& config) {
  config.validate();
  const int64_t d = config.hidden_size, vocab = config.padded_vocab_size(), inner = config.inner_size;
  int64_t count = vocab * d * (config.tie_word_embeddings ? 1 : 2) + d;  // embeddings (and head), ln_f
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    count += 2 * d + 2 * inner * d + inner * d + (config.mlp_fc1_bias ? 2 * inner : 0) + (config.mlp_fc2_bias ? d : 0);
    switch (config.mixer_of(layer)) {
      case BasedMixer::conv:
        count += 4 * d * d + 2 * d * config.conv_kernel_size + 2 * d * d + (config.conv_bias ? 4 * d + d : 0);
        break;
      case BasedMixer::linear_attention:
        count += 2 * config.linear_attention_heads * config.feature_dim * d + 2 * d * d;
        break;
      case BasedMixer::sliding_window:
        count += 4 * d * d + (config.qkv_proj_bias ? 3 * d : 0) + (config.out_proj_bias ? d : 0);
        break;
    }
  }
  return count;
}

int64_t BasedModel::state_bytes_per_sequence_for(const BasedConfig& config) {
  config.validate();
  const int64_t d = config.hidden_size, f = config.feature_dim;
  const int64_t features = 1 + f + f * (f + 1) / 2, head_dim = d / config.linear_attention_heads;
  int64_t values = 0;
  for (int64_t layer = 0; layer < config.num_layers; ++layer) {
    switch (config.mixer_of(layer)) {
      case BasedMixer::conv: values += (config.conv_kernel_size - 1) * 2 * d; break;
      case BasedMixer::linear_attention: values += config.linear_attention_heads * (head_dim + 1) * features; break;
      case BasedMixer::sliding_window: values += 2 * d * config.window; break;
    }
  }
  return values * 4;
}

}  // namespace lintime::models
