// The one decoder stack of lintime's language models (architecture.md, "Decoder"):
//   embeddings → N blocks [x += mixer(mixer_norm(x)); x += mlp(mlp_norm(x))] → norm → head
// with RMSNorm norms, a SwiGLU MLP and an LM head that is its own matrix or the embedding's.
// Each layer's mixer comes from the mixer registry (models/mixer.h) by name and options, so
// fla's GSA and GLA, their hybrids with softmax-attention layers, and Hugging Face's Llama and
// Mistral differ only in their DecoderConfig: the layer specs and the checkpoint names.
// Decoding keeps one state per layer in a state::Cache: prefill a prompt, then one token per
// step, equal to the full forward.
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/norm.h"
#include "models/mixer.h"
#include "state/cache.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lintime::models {

// The mixer of one layer: a registry name and its options.
struct MixerSpec {
  std::string name;
  nlohmann::json options = nlohmann::json::object();
};

// The checkpoint names of the stack's parts ("model.layers.0.attn_norm.weight" with fla's names,
// "model.layers.0.input_layernorm.weight" with Hugging Face's).
struct DecoderNames {
  std::string backbone = "model";         // HazyResearch's BASED: "transformer"
  std::string embeddings = "embeddings";  // Hugging Face: "embed_tokens"
  std::string mixer_norm = "attn_norm";   // "input_layernorm"
  std::string mixer = "attn";             // "self_attn"
  std::string mlp_norm = "mlp_norm";      // "post_attention_layernorm"
  std::string mlp = "mlp";
  std::string final_norm = "norm";

  // fla's names (GSA, GLA), Hugging Face's (Llama, Mistral) and HazyResearch's (BASED).
  static DecoderNames fla() { return {}; }
  static DecoderNames hugging_face() {
    return {"model", "embed_tokens", "input_layernorm", "self_attn", "post_attention_layernorm", "mlp", "norm"};
  }
  static DecoderNames hazy_research() {
    return {"transformer", "embeddings.word_embeddings", "norm1", "mixer", "norm2", "mlp", "ln_f"};
  }
};

struct DecoderConfig {
  std::string description;  // how the commands name the model: "GSA (fla)"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  std::vector<MixerSpec> layers;  // one per block, first to last
  int64_t intermediate_size = 0;
  // The norms: "rms" (RMSNorm) or "layer" (LayerNorm with a bias; zoology's MQAR model).
  std::string norm = "rms";
  // The MLP: "swiglu" (gate_proj, up_proj, down_proj; fla's and Hugging Face's), "gated"
  // (BASED's GatedMlp: fc1 d → 2 · intermediate, fc2) or "identity" (zoology's MQAR blocks:
  // x += norm2(x), an identity "state mixer" after its pre-norm).
  std::string mlp = "swiglu";
  bool mlp_bias = false;          // "swiglu": Llama's mlp_bias
  bool mlp_fc1_bias = false;      // "gated"
  bool mlp_fc2_bias = false;      // "gated"
  double mlp_out_std = -1.0;      // "gated": fc2's init std (< 0: initializer_range)
  double norm_eps = 1e-6;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  // BASED's: the residual stream in fp32 whatever the weights' dtype, and logits computed in
  // fp32 from the hidden states and the head cast to fp32.
  bool residual_in_fp32 = false;
  bool logits_in_fp32 = false;
  // Dropout on the token embeddings while training (Decoder::set_training; zoology's).
  double embed_dropout = 0.0;
  DecoderNames names;

  // Throws lintime::Error naming the first bad field or mixer option.
  void validate() const;
};

// N sequences packed into one row (input_ids [1, T]; fla's varlen training): their boundaries on
// the device for the mixers that take cu_seqlens, and on the host for the decoder, which runs
// every other mixer one sequence at a time.
struct PackedSequences {
  at::Tensor cu_seqlens;         // int32 [N + 1] on the model's device: 0, ends of the sequences
  std::vector<int64_t> offsets;  // the same boundaries on the host
  // From cu_seqlens on the host (best: on a GPU, reading it from the device waits for the
  // device); checks they rise from 0 to `tokens`.
  static PackedSequences from(const at::Tensor& cu_seqlens, int64_t tokens, const c10::Device& device);
};

// A block's feed-forward layer, whichever kind (DecoderConfig::mlp).
class FeedForward {
 public:
  virtual ~FeedForward() = default;
  virtual at::Tensor forward(const at::Tensor& x) const = 0;
  virtual layers::Module& module() = 0;
};

class DecoderBlock : public layers::Module {
 public:
  DecoderBlock(const DecoderConfig& config, const MixerSpec& mixer_spec, at::Generator& generator);

  // x [B, T, d] -> [B, T, d]; with a state, the mixer continues it (see Mixer::forward).
  // `packed`: x [1, T, d] holds the packed sequences.
  at::Tensor forward(const at::Tensor& x, state::LayerState* layer_state = nullptr,
                     const PackedSequences* packed = nullptr);

  // The mixer's layer as its own type (lintime::Error when it is another).
  template <class Layer>
  Layer& mixer_layer() {
    auto* layer = dynamic_cast<Layer*>(&mixer->module());
    if (layer == nullptr) throw_wrong_mixer();
    return *layer;
  }

  // The MLP's layer as its own type (lintime::Error when it is another).
  template <class Layer>
  Layer& mlp_layer() {
    auto* layer = dynamic_cast<Layer*>(&mlp->module());
    if (layer == nullptr) throw_wrong_mixer();
    return *layer;
  }

  const std::string& mixer_name() const { return mixer_name_; }

  std::unique_ptr<layers::Norm> mixer_norm;
  std::unique_ptr<Mixer> mixer;
  std::unique_ptr<layers::Norm> mlp_norm;
  std::unique_ptr<FeedForward> mlp;

 private:
  [[noreturn]] void throw_wrong_mixer() const;
  // The mixer on x, packed sequences one at a time where the mixer does not take cu_seqlens.
  at::Tensor mix(const at::Tensor& x, state::LayerState* layer_state, const PackedSequences* packed);
  std::string mixer_name_;
  bool residual_in_fp32_;
};

// "model.*": embeddings, blocks and the final norm.
class DecoderBackbone : public layers::Module {
 public:
  DecoderBackbone(const DecoderConfig& config, at::Generator& generator);

  // input_ids [B, T] -> hidden states after the final norm [B, T, d] in the parameter dtype.
  at::Tensor forward(const at::Tensor& input_ids, state::Cache* cache = nullptr,
                     const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

  // Applies the embedding dropout (training only).
  void set_training(bool training) { training_ = training; }
  // Activation checkpointing while gradients are recorded: every `every`-th block (0: none, 1:
  // all) keeps only its input and runs again in the backward pass (torch.utils.checkpoint's
  // reentrant form). Gradients are unchanged; the blocks' activations are not kept.
  void set_activation_checkpointing(int64_t every);
  int64_t activation_checkpointing() const { return checkpoint_every_; }

  // Where non-finite values (NaN, inf) first appear on input_ids, stage by stage without a
  // state: "the embeddings", "layer 3 (gsa)", "the final norm"; "" when every stage is finite.
  std::string first_non_finite(const at::Tensor& input_ids);

  layers::Embedding embeddings;
  std::vector<std::unique_ptr<DecoderBlock>> layers;
  std::unique_ptr<layers::Norm> norm;

 private:
  bool residual_in_fp32_;
  double embed_dropout_;
  bool training_ = false;
  int64_t checkpoint_every_ = 0;
};

class Decoder : public layers::Module {
 public:
  // Builds the model on the CPU in fp32, weights N(0, initializer_range) drawn from `generator`
  // in registration order, norms 1. Move it with to(device, dtype).
  Decoder(const DecoderConfig& config, at::Generator& generator);

  // input_ids [B, T] int64 -> logits [B, T, vocab] in fp32 (fp64 for an fp64 model). With a
  // cache, continues its sequences and leaves their state after the last token.
  at::Tensor forward(const at::Tensor& input_ids, state::Cache* cache = nullptr,
                     const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
  // Hidden states after the final norm, [B, T, d] in the parameter dtype.
  at::Tensor hidden_states(const at::Tensor& input_ids, state::Cache* cache = nullptr,
                           const std::optional<at::Tensor>& cu_seqlens = std::nullopt);
  // h [..., d] -> logits [..., vocab] (fp32, fp64 for an fp64 model).
  at::Tensor logits(const at::Tensor& hidden) const;
  // The LM head's matrix [vocab, d]: its own or the tied embedding's.
  const at::Tensor& head_weight() const { return lm_head ? lm_head->weight : model.embeddings.weight; }

  // An empty cache for `batch` sequences on the model's device; `expected_tokens`: the length
  // they will reach, where known (a KV cache allocates it at once; 0: grow as needed).
  state::Cache make_cache(int64_t batch, int64_t expected_tokens = 0) const;
  // Caches made from now on keep their recurrent states (GSA, GLA, BASED's Taylor attention) in
  // `dtype` between calls (nullopt or float32: in the compute dtype, the default). bfloat16
  // halves their memory; each call still computes in fp32 and rounds its result once.
  void set_recurrent_state_dtype(std::optional<at::ScalarType> dtype);
  std::optional<at::ScalarType> recurrent_state_dtype() const { return recurrent_state_dtype_; }
  // Runs the prompt [B, T] into the cache (which it resets first); returns logits [B, T, vocab].
  at::Tensor prefill(const at::Tensor& input_ids, state::Cache& cache);
  // One token per sequence, token [B] -> logits [B, vocab]; updates the cache.
  at::Tensor step(const at::Tensor& token, state::Cache& cache);

  // A running batch: row b of input_ids [B, T] continues the sequence in cache slot slots[b]
  // (distinct slots, admitted with cache.admit()); a prompt is T tokens of one slot, a decode
  // step one token of each slot that has work. Returns logits [B, T, vocab] ([B, 1, vocab], the
  // last position's, with `last_position_only`: what a prefill needs, without a vocabulary-wide
  // row for every prompt token). The slots' rows are gathered, continued and written back, so
  // every other slot keeps its state; layers whose rows share one position (a KV cache) run the
  // slots in groups of equal length.
  at::Tensor forward_slots(const at::Tensor& input_ids, state::Cache& cache, const std::vector<int64_t>& slots,
                           bool last_position_only = false);

  // Where non-finite values first appear for input_ids: the backbone's stages, then "the LM head"
  // ("" when the logits are finite): what generation names when its logits stop being finite.
  std::string first_non_finite(const at::Tensor& input_ids);

  // The decoding state of one sequence after `tokens` tokens, in bytes, in the parameters' dtype.
  int64_t state_bytes_after(int64_t tokens) const;
  // Whether every layer's step can be recorded once and replayed (Mixer::step_is_replayable).
  bool steps_are_replayable() const;
  // Whether a step over a server's slots (infer::SlotSteps) can be recorded and replayed: every
  // layer's step can (Mixer::rows_step_is_replayable; a KV cache's too, its lengths then on the device),
  // with recurrent states kept narrower only where the mixer steps them in place in that dtype
  // (Mixer::rows_step_keeps_narrow_states: GSA's in bf16).
  bool slot_steps_are_replayable() const;
  // Whether every layer's state can continue a prefill with another chunk (Mixer::continues_prefill).
  bool prefills_continue() const;

  const DecoderConfig& decoder_config() const { return decoder_config_; }

  // Without building weights.
  static int64_t parameter_count_for(const DecoderConfig& config);
  // Sum of the mixers' state bytes per sequence as the registry counts them (fp32).
  static int64_t state_bytes_per_sequence_for(const DecoderConfig& config);

 private:
  DecoderConfig decoder_config_;
  std::optional<at::ScalarType> recurrent_state_dtype_;

 public:
  DecoderBackbone model;
  std::unique_ptr<layers::Linear> lm_head;  // null when tie_word_embeddings
};

}  // namespace lintime::models
