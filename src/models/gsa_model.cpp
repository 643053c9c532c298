// GSA causal LM: block wiring, generation entry points, size formulas.
#include "models/gsa_model.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <string>

namespace lintime::models {

namespace {

const GsaConfig& validated(const GsaConfig& config) {
  config.validate();
  LINTIME_CHECK(!config.has_hybrid_attention(),
                "config key \"attn\": hybrid softmax-attention layers are not supported, expected null or no layers");
  return config;
}

}  // namespace

layers::GatedSlotAttentionOptions gsa_attention_options(const GsaConfig& config) {
  layers::GatedSlotAttentionOptions options;
  options.hidden_size = config.hidden_size;
  options.num_heads = config.num_heads;
  options.num_kv_heads = config.num_kv_heads;
  options.num_slots = config.resolved_num_slots();
  options.expand_k = config.expand_k;
  options.expand_v = config.expand_v;
  options.gate_logit_normalizer = config.gate_logit_normalizer;
  options.feature_map = config.feature_map;
  options.use_short_conv = config.use_short_conv;
  options.conv_size = config.conv_size;
  options.elementwise_affine = config.elementwise_affine;
  options.norm_eps = 1e-5;
  options.scale = std::nullopt;
  options.initializer_range = config.initializer_range;
  return options;
}

GsaBlock::GsaBlock(const GsaConfig& config, at::Generator& generator)
    : attn_norm(config.hidden_size, config.norm_eps),
      attn(gsa_attention_options(config), generator),
      mlp_norm(config.hidden_size, config.norm_eps),
      mlp(config.hidden_size, config.resolved_intermediate_size(), config.initializer_range, generator) {
  register_module("attn_norm", attn_norm);
  register_module("attn", attn);
  register_module("mlp_norm", mlp_norm);
  register_module("mlp", mlp);
}

at::Tensor GsaBlock::forward(const at::Tensor& x, state::GsaLayerState* state,
                             const std::optional<at::Tensor>& cu_seqlens) {
  // h = x + attention; mlp_norm(h) from the same pass (one kernel in inference on a GPU).
  auto [h, normed] = mlp_norm.add_forward(x, attn.forward(attn_norm.forward(x), state, cu_seqlens));
  return h + mlp.forward(normed);
}

GsaBackbone::GsaBackbone(const GsaConfig& config, at::Generator& generator)
    : embeddings(config.vocab_size, config.hidden_size, config.initializer_range, generator),
      norm(config.hidden_size, config.norm_eps) {
  register_module("embeddings", embeddings);
  layers.reserve(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    layers.push_back(std::make_unique<GsaBlock>(config, generator));
    register_module("layers." + std::to_string(i), *layers.back());
  }
  register_module("norm", norm);
}

at::Tensor GsaBackbone::forward(const at::Tensor& input_ids, state::InferenceCache* cache,
                                const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(input_ids.dim() == 2, "GsaModel: input_ids must have shape [B, T], got ",
              shape_string(input_ids.sizes()));
  if (cache != nullptr) {
    TORCH_CHECK(cache->num_layers() == static_cast<int64_t>(layers.size()), "GsaModel: the cache has ",
                cache->num_layers(), " layers, the model ", layers.size());
  }
  at::Tensor x = embeddings.forward(input_ids);  // [B, T, d]
  for (size_t i = 0; i < layers.size(); ++i) {
    x = layers[i]->forward(x, cache ? &cache->layer(static_cast<int64_t>(i)) : nullptr, cu_seqlens);
  }
  if (cache != nullptr) cache->advance(input_ids.size(1));
  return norm.forward(x);
}

GsaModel::GsaModel(const GsaConfig& config, at::Generator& generator)
    : config_(validated(config)), model(config_, generator) {
  register_module("model", model);
  if (!config_.tie_word_embeddings) {
    lm_head = std::make_unique<layers::Linear>(config_.hidden_size, config_.vocab_size, config_.initializer_range,
                                               generator);
    register_module("lm_head", *lm_head);
  }
}

at::Tensor GsaModel::hidden_states(const at::Tensor& input_ids, state::InferenceCache* cache,
                                   const std::optional<at::Tensor>& cu_seqlens) {
  return model.forward(input_ids, cache, cu_seqlens);
}

at::Tensor GsaModel::logits(const at::Tensor& hidden) const {
  at::Tensor result = lm_head ? lm_head->forward(hidden) : at::linear(hidden, model.embeddings.weight);
  return result.to(compute_dtype(result.scalar_type()));
}

at::Tensor GsaModel::forward(const at::Tensor& input_ids, state::InferenceCache* cache,
                             const std::optional<at::Tensor>& cu_seqlens) {
  return logits(hidden_states(input_ids, cache, cu_seqlens));
}

state::InferenceCache GsaModel::make_cache(int64_t batch) const {
  LINTIME_CHECK(batch > 0, "GsaModel::make_cache: batch must be positive, got ", batch);
  const at::Tensor& reference = model.embeddings.weight;
  std::vector<state::GsaLayerState> states;
  states.reserve(model.layers.size());
  for (const auto& block : model.layers) {
    states.push_back(block->attn.make_state(batch, reference.device(), reference.scalar_type()));
  }
  return state::InferenceCache(std::move(states));
}

at::Tensor GsaModel::prefill(const at::Tensor& input_ids, state::InferenceCache& cache) {
  TORCH_CHECK(input_ids.dim() == 2 && input_ids.size(0) == cache.batch_size(),
              "GsaModel::prefill: input_ids must have shape [B, T] with B = cache batch size ", cache.batch_size(),
              ", got ", shape_string(input_ids.sizes()));
  cache.reset();
  return forward(input_ids, &cache);
}

at::Tensor GsaModel::step(const at::Tensor& token, state::InferenceCache& cache) {
  TORCH_CHECK(token.dim() == 1 && token.size(0) == cache.batch_size(),
              "GsaModel::step: token must have shape [B] with B = cache batch size ", cache.batch_size(), ", got ",
              shape_string(token.sizes()));
  return forward(token.unsqueeze(1), &cache).squeeze(1);
}

int64_t GsaModel::parameter_count_for(const GsaConfig& config) {
  validated(config);
  const int64_t d = config.hidden_size;
  const int64_t per_block = layers::GatedSlotAttention::parameter_count_for(gsa_attention_options(config)) +
                            3 * d * config.resolved_intermediate_size() + 2 * d;
  const int64_t embeddings = config.vocab_size * d;
  return embeddings + config.num_hidden_layers * per_block + d + (config.tie_word_embeddings ? 0 : embeddings);
}

int64_t GsaModel::state_bytes_per_sequence_for(const GsaConfig& config) {
  validated(config);
  return config.num_hidden_layers *
         layers::GatedSlotAttention::state_bytes_per_sequence(gsa_attention_options(config));
}

}  // namespace lintime::models
