// fla's GSAForCausalLM (gsa.md §4): embeddings → L blocks (x += attn(attn_norm(x));
// x += mlp(mlp_norm(x))) → norm → lm_head (or the embedding matrix when tied). Parameter names
// are fla's current checkpoint layout ("model.layers.0.attn.q_proj.weight", "lm_head.weight").
#pragma once

#include "layers/gated_slot_attention.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"
#include "layers/swiglu_mlp.h"
#include "models/gsa_config.h"
#include "state/inference_cache.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace lintime::models {

// The attention options of one GSA layer of a model with this config. g_norm uses eps 1e-5
// whatever norm_eps says, as current fla does (gsa.md §3).
layers::GatedSlotAttentionOptions gsa_attention_options(const GsaConfig& config);

class GsaBlock : public layers::Module {
 public:
  GsaBlock(const GsaConfig& config, at::Generator& generator);

  // x [B, T, d] -> [B, T, d]
  at::Tensor forward(const at::Tensor& x, state::GsaLayerState* state = nullptr,
                     const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

  layers::RMSNorm attn_norm;
  layers::GatedSlotAttention attn;
  layers::RMSNorm mlp_norm;
  layers::SwiGluMlp mlp;
};

// "model.*": embeddings, blocks and the final norm.
class GsaBackbone : public layers::Module {
 public:
  GsaBackbone(const GsaConfig& config, at::Generator& generator);

  // input_ids [B, T] -> hidden states [B, T, d] in the parameter dtype.
  at::Tensor forward(const at::Tensor& input_ids, state::InferenceCache* cache = nullptr,
                     const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

  layers::Embedding embeddings;
  std::vector<std::unique_ptr<GsaBlock>> layers;
  lintime::layers::RMSNorm norm;
};

class GsaModel : public layers::Module {
 public:
  // Builds the model on the CPU in fp32, weights N(0, initializer_range) drawn from
  // `generator` in registration order, norms 1. Move it with to(device, dtype).
  GsaModel(const GsaConfig& config, at::Generator& generator);

  // input_ids [B, T] int64 -> logits [B, T, vocab] in fp32 (fp64 for an fp64 model).
  // With a cache, continues the cached sequences and leaves their state after the last token.
  at::Tensor forward(const at::Tensor& input_ids, state::InferenceCache* cache = nullptr,
                     const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
  // Hidden states after the final norm, [B, T, d] in the parameter dtype.
  at::Tensor hidden_states(const at::Tensor& input_ids, state::InferenceCache* cache = nullptr,
                           const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
  // h [..., d] -> logits [..., vocab] (fp32, fp64 for an fp64 model).
  at::Tensor logits(const at::Tensor& hidden) const;

  // A zero cache for `batch` sequences on the model's device (states fp32, fp64 for fp64).
  state::InferenceCache make_cache(int64_t batch) const;
  // Runs the prompt [B, T] into the cache (which it resets first); returns logits [B, T, vocab].
  at::Tensor prefill(const at::Tensor& input_ids, state::InferenceCache& cache);
  // One token per sequence, token [B] -> logits [B, vocab]; updates the cache in place.
  at::Tensor step(const at::Tensor& token, state::InferenceCache& cache);

  const GsaConfig& config() const { return config_; }

  // Without building weights.
  static int64_t parameter_count_for(const GsaConfig& config);
  // fp32 recurrent state (and conv history) bytes per sequence over all layers.
  static int64_t state_bytes_per_sequence_for(const GsaConfig& config);

 private:
  GsaConfig config_;

 public:
  GsaBackbone model;
  std::unique_ptr<layers::Linear> lm_head;  // null when tie_word_embeddings
};

}  // namespace lintime::models
