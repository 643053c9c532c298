// Transformer-to-linear conversion (T2R, gsa.md): a pretrained Llama or Mistral folder
// (Hugging Face layout) becomes an fla-layout GSA or GLA folder that finetuning continues from.
// Copied bit for bit: the embeddings, the q/k/v/o projections, input_layernorm -> attn_norm,
// post_attention_layernorm -> mlp_norm, the SwiGLU projections, the final norm and the head.
// New parameters (GSA's f_proj and g_norm; GLA's gate projections and g_norm) are initialised
// as fla's _init_weights leaves them (normal with initializer_range, norm gains 1), from `seed`.
// Grouped-query heads stay grouped for GSA (num_kv_heads: one state per key/value head);
// lintime's GLA keeps one state per head, so a grouped source's k/v rows are repeated for it.
// --softmax-layers keeps those layers softmax attention (fla's hybrid "attn").
//
// Memory: the target model is built in fp32 on the CPU (4 bytes per parameter), then written in
// the source's dtype.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lintime::models {

struct ConvertOptions {
  std::string to = "gsa";  // "gsa" or "gla"
  int64_t num_slots = 64;                // GSA
  double gate_logit_normalizer = 8.0;    // GSA (fla's default; the paper's T2R models use 4)
  // "" = the target's default: GSA swish (fla's); GLA relu (the paper's adaptation). GSA takes
  // swish or relu; GLA relu, swish or none (fla's GLA default: no feature map).
  std::string feature_map;
  bool gla_output_gate = false;          // GLA: the paper's adaptation has none
  std::vector<int64_t> softmax_layers;   // kept as softmax attention
  uint64_t seed = 0;                     // the new parameters' initialisation
  bool force = false;                    // replace an existing output folder
};

struct ConvertReport {
  int64_t copied_tensors = 0, new_tensors = 0;
  int64_t parameters = 0;
  std::string dtype;  // the folder's, the source's
  std::vector<std::string> tokenizer_files;
};

// Writes `out_dir` (through "<out_dir>.tmp", renamed when complete). Throws lintime::Error with
// one line for an unsupported source (architecture, biases, activation, head sizes the target
// cannot take), a missing or mis-shaped tensor, or an existing `out_dir` without `force`.
ConvertReport convert_transformer(const std::string& source_dir, const std::string& out_dir,
                                  const ConvertOptions& options);

}  // namespace lintime::models
