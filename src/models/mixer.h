// The sequence mixers of every model, behind one interface and one registry: the language
// models (models/decoder.h) and the MQAR model choose theirs by name with a JSON object of
// options. A new mixer is one options parser and one entry in mixers.cpp.
//
// Registered mixers and their options (defaults in parentheses; the language models' configs
// translate their fields into these, the MQAR model's [model.mixer_options] gives them as is):
//   "gsa":       fla's GatedSlotAttention (layers/gated_slot_attention.h). num_heads (4),
//                num_kv_heads (num_heads), num_slots (d_model / 4), expand_k (1), expand_v (1),
//                gate_logit_normalizer (16), scale (head_k_dim^-0.5), feature_map ("swish" |
//                "relu"), use_short_conv (false), conv_size (4), elementwise_affine (true),
//                norm_eps (1e-5). Decodes from a constant-size state.
//   "gla":       fla's GatedLinearAttention (layers/gated_linear_attention.h). num_heads (2),
//                expand_k (0.5), expand_v (1), gate_low_rank_dim (16), gate_logit_normalizer
//                (16), use_output_gate (true), norm_eps (1e-5), scale (head_k_dim^-0.5),
//                norm_name ("g_norm"; fla's language model names its fused gated norm
//                "g_norm_swish_gate"), feature_map (null | "relu" | "swish" | "silu": on q and
//                k, after the gates). Decodes from a constant-size state.
//   "retnet":    fla's MultiScaleRetention (layers/multiscale_retention.h): fixed per-head decay
//                1 − 2^(−5−h), rotary q/k. num_heads (2), expand_k (1), expand_v (2),
//                use_output_gate (true), norm_eps (1e-5), rotary_base (10000), scale
//                (head_k_dim^-0.5). Decodes from a constant-size state and each sequence's position.
//   "hgrn2":     fla's HGRN2Attention (layers/hgrn2_attention.h): the key tied to one minus the
//                forget gate. num_heads (2) or expand_ratio (then num_heads = d_model /
//                expand_ratio), norm_eps (1e-5). Decodes from a constant-size state.
//   "gqa":       grouped-query softmax attention with RoPE (layers/grouped_query_attention.h;
//                Llama's and Mistral's self_attn, fla's hybrid Attention). num_heads (1),
//                num_kv_heads (num_heads), head_dim (d_model / num_heads), bias (false: q, k,
//                v), output_bias (bias), sliding_window (null: every key), rope_theta (10000),
//                rope_type ("default" | "linear" | "llama3"), rope_factor (1),
//                low_freq_factor (1), high_freq_factor (4), original_max_position_embeddings
//                (8192). Decodes from a KV cache that grows with the sequence; its state is counted
//                at 1024 tokens, as "attention"'s.
//   "base_conv": zoology's BaseConv. kernel_size (3)
//   "based_conv": the BASED language model's gated short convolution (layers/gated_conv.h).
//                kernel_size (3), bias (true), out_init_std (the init std: out_proj's).
//                Decodes from the conv's last k − 1 inputs.
//   "mamba":     mamba_ssm's Mamba block as fla's Mamba layer (layers/mamba.h). d_state (16),
//                d_conv (4), expand (2), dt_rank (0 or "auto": ceil(d_model / 16)), conv_bias
//                (true), bias (false: in_proj and out_proj). Decodes from a constant-size state:
//                the scan state and the conv's last d_conv − 1 inputs.
//   "based":     feature_dim (16), num_heads (1), normalize (true), eps (1e-12), out_init_std:
//                BASED's Taylor linear attention (layers/based_linear_attention.h). Decodes
//                from a constant-size state.
//   "linear_attention": feature_map ("taylor" | "relu" | "elu+1" | "identity"; "taylor"),
//                and the options of "based" (the same layer; decodes with the Taylor map)
//   "sliding_window": window (64: keys seen per query, itself included; zoology's
//                block_size + 1), num_heads (1), bias (true), rotary_base (0: none),
//                out_init_std (layers/softmax_attention.h). Decodes from ring buffers.
//   "attention": num_heads (1), counted_length (1024: the length its KV cache is counted at)
// An unknown name or option key, or a value of the wrong type, throws lintime::Error naming
// it ("config key \"model.gsa.num_slots\": ...") and listing the known ones.
#pragma once

#include "layers/module.h"
#include "state/layer_state.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lintime::models {

class Mixer {
 public:
  virtual ~Mixer() = default;
  // x [B, T, d] -> [B, T, d] in x's dtype. state == nullptr: the stateless forward (training).
  // Otherwise the state (from make_state) holds one row per sequence of x, which x continues:
  // a prefill from an empty state, or one token per step; it is left after x's last token.
  // cu_seqlens [N + 1]: N sequences packed into B == 1 (mixers that support it).
  virtual at::Tensor forward(const at::Tensor& x, state::LayerState* state = nullptr,
                             const std::optional<at::Tensor>& cu_seqlens = std::nullopt) = 0;
  // An empty decoding state for `batch` sequences on `device` (`dtype`: the model's). Throws
  // lintime::Error for a mixer that has no decoding state yet.
  virtual std::unique_ptr<state::LayerState> make_state(int64_t batch, const c10::Device& device,
                                                        at::ScalarType dtype) const = 0;
  // The decoding state of one sequence after `tokens` tokens in a model of `dtype`, in bytes
  // (constant for recurrent mixers; a KV cache grows with the tokens, up to its window).
  virtual int64_t state_bytes_after(int64_t tokens, at::ScalarType dtype) const = 0;
  // Recurrent state bytes per sequence, as zoology and the papers count it (fp32).
  virtual int64_t state_bytes_per_sequence() const = 0;
  // Whether forward takes cu_seqlens itself; the decoder runs the others one packed sequence
  // at a time.
  virtual bool packs_sequences() const { return false; }
  // Whether a state left by a prefill can take another multi-token chunk (a long prompt in
  // pieces); false for mixers that take one token at a time after their prefill.
  virtual bool continues_prefill() const { return true; }
  // Whether a decode step reads nothing from the host (no position kept there), so that it can
  // be recorded once and replayed as a CUDA graph.
  virtual bool step_is_replayable() const = 0;
  // The same for a step over a server's slots continued in place (state::SlotRows with
  // keys_up_to_capacity): a KV cache's step then reads its lengths on the device.
  virtual bool rows_step_is_replayable() const { return step_is_replayable(); }
  // Whether that step over slots still replays when the recurrent states are kept in `dtype`
  // (Decoder::set_recurrent_state_dtype): true where the step reads and writes them in that dtype
  // in place, or where the mixer keeps no recurrent state. The others widen and narrow them around
  // each call, allocating anew every step.
  virtual bool rows_step_keeps_narrow_states(at::ScalarType /*dtype*/) const { return false; }
  // Whether the training forward and backward on a GPU read nothing from the host (no
  // synchronisation, no host-dependent shapes), so that a whole training step can be recorded
  // as a CUDA graph (train/graphed_step.h). The ATen chunked GLA form checks its gates on the
  // host, so only mixers on synchronisation-free kernels say yes.
  virtual bool training_is_replayable() const { return false; }
  // The layer that owns the weights.
  virtual layers::Module& module() = 0;
};

// Names of the registered mixers, in registry order.
std::vector<std::string> mixer_names();

// Builds mixer `name` for width d_model from `options` (a JSON object; null = all defaults).
// Weights are drawn from `generator` (linear N(0, init_std)) unless a WeightsToBeLoaded scope
// is alive.
std::unique_ptr<Mixer> make_mixer(const std::string& name, int64_t d_model, const nlohmann::json& options,
                                  at::Generator& generator, double init_std = 0.02);
// Without building the layer (these validate the options the same way).
int64_t mixer_parameter_count(const std::string& name, int64_t d_model, const nlohmann::json& options);
int64_t mixer_state_bytes_per_sequence(const std::string& name, int64_t d_model, const nlohmann::json& options);

}  // namespace lintime::models
