// The BASED language model (based.md §4; HazyResearch's GPTLMHeadModel with BASED mixers) as a
// configuration of the decoder stack (models/decoder.h): embeddings → blocks → final RMSNorm →
// LM head tied to the embeddings. Each block is pre-norm with the residual stream kept in fp32
// when residual_in_fp32:
//   x += mixer(norm1(x));  x += mlp(norm2(x))
// (HazyResearch writes the same sums with the residual kept apart). The mixer of layer i is
// the gated short convolution ("based_conv"), BASED's Taylor linear attention ("based") or the
// rotary sliding-window attention ("sliding_window"), as BasedConfig::mixer_of says; the MLP is
// BASED's GatedMlp. Parameter names are HazyResearch's
// ("transformer.embeddings.word_embeddings.weight", "transformer.layers.3.mixer.in_proj.weight",
// "transformer.ln_f.weight"; "lm_head.weight" only when untied). Logits keep the padded
// vocabulary width and are computed in fp32, as theirs are.
#pragma once

#include "models/based_config.h"
#include "models/decoder.h"

#include <ATen/core/Generator.h>

#include <cstdint>

namespace lintime::models {

// The decoder of this config (validated): HazyResearch's initialisation (linear weights and the
// embedding N(0, initializer_range), out_proj and fc2 weights N(0, initializer_range /
// √(2 n_layer)), zero biases, norms 1, the conv U(±1/√k)).
DecoderConfig based_decoder_config(const BasedConfig& config);

class BasedModel : public Decoder {
 public:
  // Builds the model on the CPU in fp32. Move it with to(device, dtype).
  BasedModel(const BasedConfig& config, at::Generator& generator);

  const BasedConfig& config() const { return config_; }

  // Without building the model: its parameter count, and the bytes per sequence of its decoding
  // state in fp32 (conv layers their last k − 1 inputs of 2 d channels; linear-attention layers
  // S and z per head with zoology's symmetric feature count, based.md §6; sliding-window layers
  // the keys and values of their window).
  static int64_t parameter_count_for(const BasedConfig& config);
  static int64_t state_bytes_per_sequence_for(const BasedConfig& config);

 private:
  BasedConfig config_;
};

}  // namespace lintime::models
