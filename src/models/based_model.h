// The BASED language model (based.md §4; HazyResearch's GPTLMHeadModel with BASED mixers):
// embeddings → blocks → final RMSNorm → LM head tied to the embeddings. Each block is pre-norm
// with the residual stream kept apart (in fp32 when residual_in_fp32):
//   residual += h;  h = mixer(norm1(residual));  residual += h;  h = mlp(norm2(residual))
// and the last h is added before ln_f. The mixer of layer i is the gated short convolution,
// BASED's Taylor linear attention or the rotary sliding-window attention (BasedConfig::mixer_of).
// Parameter names are HazyResearch's ("transformer.embeddings.word_embeddings.weight",
// "transformer.layers.3.mixer.in_proj.weight", "transformer.ln_f.weight"; "lm_head.weight" only
// when untied). Logits keep the padded vocabulary width, as theirs do.
#pragma once

#include "layers/based_linear_attention.h"
#include "layers/gated_conv.h"
#include "layers/gated_mlp.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"
#include "layers/softmax_attention.h"
#include "models/based_config.h"
#include "state/based_cache.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace lintime::models {

class BasedBlock : public layers::Module {
 public:
  BasedBlock(const BasedConfig& config, int64_t layer, at::Generator& generator);

  // The block's two sublayers on the residual stream: (h, residual) -> (h, residual). With a
  // layer state, the mixer continues it (prefill when it is empty, then one token at a time).
  void forward(at::Tensor& h, at::Tensor& residual, bool residual_in_fp32,
               state::BasedLayerState* layer_state = nullptr) const;
  // The mixer alone, x [B, T, d] -> [B, T, d].
  at::Tensor mix(const at::Tensor& x, state::BasedLayerState* layer_state = nullptr) const;

  BasedMixer kind;
  layers::RMSNorm norm1;
  std::unique_ptr<layers::GatedConv> conv;                          // kind == conv
  std::unique_ptr<layers::BasedLinearAttention> linear_attention;  // kind == linear_attention
  std::unique_ptr<layers::SoftmaxAttention> sliding_window;        // kind == sliding_window
  layers::RMSNorm norm2;
  layers::GatedMlp mlp;
};

class BasedModel : public layers::Module {
 public:
  // Builds the model on the CPU in fp32 with HazyResearch's initialisation: linear weights and
  // the embedding N(0, initializer_range), out_proj and fc2 weights N(0, initializer_range /
  // √(2 n_layer)), zero biases, norms 1, the conv U(±1/√k). Move it with to(device, dtype).
  BasedModel(const BasedConfig& config, at::Generator& generator);

  // input_ids [B, T] int64 -> logits [B, T, padded vocab] in fp32 (fp64 for an fp64 model).
  at::Tensor forward(const at::Tensor& input_ids) const;

  // Constant-memory decoding: prefill runs the prompt [B, T] into a fresh cache (its previous
  // contents are dropped) and returns its logits [B, T, V]; step takes one token per sequence
  // [B] and returns logits [B, V]. Every sequence of the batch is at the same position.
  at::Tensor prefill(const at::Tensor& input_ids, state::BasedCache& cache) const;
  at::Tensor step(const at::Tensor& token, state::BasedCache& cache) const;

  const BasedConfig& config() const { return config_; }

  // Without building the model: its parameter count, and the bytes per sequence of its decoding
  // state in fp32 (conv layers their last k − 1 inputs of 2 d channels; linear-attention layers
  // S and z per head with zoology's symmetric feature count, based.md §6; sliding-window layers
  // the keys and values of their window).
  static int64_t parameter_count_for(const BasedConfig& config);
  static int64_t state_bytes_per_sequence_for(const BasedConfig& config);

 private:
  // "transformer.*"
  struct Backbone : layers::Module {
    Backbone(const BasedConfig& config, at::Generator& generator);
    struct Embeddings : layers::Module {
      Embeddings(int64_t vocab, int64_t width, double std, at::Generator& generator);
      layers::Embedding word_embeddings;
    } embeddings;
    std::vector<std::unique_ptr<BasedBlock>> layers;
    layers::RMSNorm ln_f;
  };
  at::Tensor run(const at::Tensor& input_ids, state::BasedCache* cache) const;
  BasedConfig config_;

 public:
  Backbone transformer;
  at::Tensor lm_head;  // [padded vocab, d] when untied; undefined when tied
};

}  // namespace lintime::models
