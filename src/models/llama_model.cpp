// Llama / Mistral causal LM: rotary frequencies, block wiring, decoding entry points, sizes.
#include "models/llama_model.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

namespace lintime::models {
namespace {

const LlamaConfig& validated(const LlamaConfig& config) {
  config.validate();
  return config;
}

layers::GroupedQueryAttentionOptions attention_options(const LlamaConfig& config) {
  layers::GroupedQueryAttentionOptions options;
  options.hidden_size = config.hidden_size;
  options.num_heads = config.num_attention_heads;
  options.num_kv_heads = config.resolved_num_key_value_heads();
  options.head_dim = config.resolved_head_dim();
  options.bias = config.attention_bias;
  options.sliding_window = config.sliding_window;
  options.initializer_range = config.initializer_range;
  return options;
}

}  // namespace

at::Tensor rotary_inverse_frequencies(const RopeSettings& rope, int64_t head_dim) {
  LINTIME_CHECK(head_dim > 0 && head_dim % 2 == 0, "rotary_inverse_frequencies: head_dim must be even, got ", head_dim);
  const auto options = at::TensorOptions().dtype(at::kDouble);
  at::Tensor inverse = 1.0 / at::pow(rope.rope_theta, at::arange(0, head_dim, 2, options) / static_cast<double>(head_dim));
  if (rope.rope_type == "linear") return inverse / rope.factor;
  if (rope.rope_type != "llama3") return inverse;
  // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
  const double old_context = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelength = old_context / rope.low_freq_factor;
  const double high_freq_wavelength = old_context / rope.high_freq_factor;
  const at::Tensor wavelength = 2.0 * M_PI / inverse;
  at::Tensor scaled = at::where(wavelength > low_freq_wavelength, inverse / rope.factor, inverse);
  const at::Tensor smooth = (old_context / wavelength - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  const at::Tensor smoothed = (1.0 - smooth) * scaled / rope.factor + smooth * scaled;
  const at::Tensor medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength);
  return at::where(medium, smoothed, scaled);
}

LlamaBlock::LlamaBlock(const LlamaConfig& config, std::shared_ptr<const layers::RotaryTable> rotary,
                       at::Generator& generator)
    : input_layernorm(config.hidden_size, config.rms_norm_eps),
      self_attn(attention_options(config), std::move(rotary), generator),
      post_attention_layernorm(config.hidden_size, config.rms_norm_eps),
      mlp(config.hidden_size, config.intermediate_size, config.initializer_range, generator, config.mlp_bias) {
  register_module("input_layernorm", input_layernorm);
  register_module("self_attn", self_attn);
  register_module("post_attention_layernorm", post_attention_layernorm);
  register_module("mlp", mlp);
}

at::Tensor LlamaBlock::forward(const at::Tensor& x, state::KvLayerCache* cache, int64_t reserve) const {
  // h = x + attention; post_attention_layernorm(h) from the same pass (one kernel in inference
  // on a GPU).
  auto [h, normed] = post_attention_layernorm.add_forward(x, self_attn.forward(input_layernorm.forward(x), cache, reserve));
  return h + mlp.forward(normed);
}

LlamaBackbone::LlamaBackbone(const LlamaConfig& config, at::Generator& generator)
    : embed_tokens(config.vocab_size, config.hidden_size, config.initializer_range, generator),
      norm(config.hidden_size, config.rms_norm_eps) {
  register_module("embed_tokens", embed_tokens);
  auto rotary = std::make_shared<const layers::RotaryTable>(
      rotary_inverse_frequencies(config.rope, config.resolved_head_dim()));
  layers.reserve(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    layers.push_back(std::make_unique<LlamaBlock>(config, rotary, generator));
    register_module("layers." + std::to_string(i), *layers.back());
  }
  register_module("norm", norm);
}

at::Tensor LlamaBackbone::forward(const at::Tensor& input_ids, state::KvCache* cache) const {
  LINTIME_CHECK(input_ids.dim() == 2, "LlamaModel: input_ids must have shape [B, T], got ",
                shape_string(input_ids.sizes()));
  if (cache != nullptr) {
    LINTIME_CHECK(cache->layers.size() == layers.size(), "LlamaModel: the cache has ", cache->layers.size(),
                  " layers, the model ", layers.size());
  }
  at::Tensor x = embed_tokens.forward(input_ids);
  for (size_t i = 0; i < layers.size(); ++i) {
    x = layers[i]->forward(x, cache ? &cache->layers[i] : nullptr, cache ? cache->reserve : 0);
  }
  if (cache != nullptr) cache->seen_tokens += input_ids.size(1);
  return norm.forward(x);
}

LlamaModel::LlamaModel(const LlamaConfig& config, at::Generator& generator)
    : config_(validated(config)), model(config_, generator) {
  register_module("model", model);
  if (!config_.tie_word_embeddings) {
    lm_head = std::make_unique<layers::Linear>(config_.hidden_size, config_.vocab_size, config_.initializer_range,
                                               generator);
    register_module("lm_head", *lm_head);
  }
}

at::Tensor LlamaModel::hidden_states(const at::Tensor& input_ids, state::KvCache* cache) const {
  return model.forward(input_ids, cache);
}

at::Tensor LlamaModel::logits(const at::Tensor& hidden) const {
  at::Tensor result = lm_head ? lm_head->forward(hidden) : at::linear(hidden, model.embed_tokens.weight);
  return result.to(compute_dtype(result.scalar_type()));
}

at::Tensor LlamaModel::forward(const at::Tensor& input_ids, state::KvCache* cache) const {
  return logits(hidden_states(input_ids, cache));
}

state::KvCache LlamaModel::make_cache(int64_t reserve) const {
  LINTIME_CHECK(reserve >= 0, "LlamaModel::make_cache: reserve must be >= 0, got ", reserve);
  state::KvCache cache;
  cache.layers.resize(model.layers.size());
  cache.reserve = reserve;
  return cache;
}

at::Tensor LlamaModel::prefill(const at::Tensor& input_ids, state::KvCache& cache) const {
  for (auto& layer : cache.layers) layer = state::KvLayerCache{};
  cache.layers.resize(model.layers.size());
  cache.seen_tokens = 0;
  return hidden_states(input_ids, &cache);
}

at::Tensor LlamaModel::step(const at::Tensor& token, state::KvCache& cache) const {
  LINTIME_CHECK(token.dim() == 1, "LlamaModel::step: token must be [B], got ", shape_string(token.sizes()));
  LINTIME_CHECK(cache.seen_tokens > 0 && token.size(0) == cache.layers.front().keys.size(0),
                "LlamaModel::step: token must be [B] with B the prefill's batch, and a prefill must come first");
  return forward(token.unsqueeze(1), &cache).squeeze(1);
}

int64_t LlamaModel::parameter_count_for(const LlamaConfig& config) {
  validated(config);
  const int64_t d = config.hidden_size, heads = config.num_attention_heads;
  const int64_t kv = config.resolved_num_key_value_heads(), dim = config.resolved_head_dim();
  const int64_t attention = d * heads * dim * 2 + d * kv * dim * 2 +
                            (config.attention_bias ? heads * dim + 2 * kv * dim + d : 0);
  const int64_t mlp = 3 * d * config.intermediate_size + (config.mlp_bias ? 2 * config.intermediate_size + d : 0);
  const int64_t embeddings = config.vocab_size * d;
  return embeddings + config.num_hidden_layers * (attention + mlp + 2 * d) + d +
         (config.tie_word_embeddings ? 0 : embeddings);
}

int64_t LlamaModel::kv_bytes_per_token_for(const LlamaConfig& config, at::ScalarType dtype) {
  validated(config);
  return config.num_hidden_layers * 2 * config.resolved_num_key_value_heads() * config.resolved_head_dim() *
         static_cast<int64_t>(c10::elementSize(dtype));
}

}  // namespace lintime::models
