// Multi-scale retention (RetNet, Sun et al. 2023), the GSA paper's RetNet baseline, following
// fla's MultiScaleRetention layer with its defaults and no short convolution:
//   q, k = RoPE(q_proj x), RoPE(k_proj x)                     [B, T, H, K], K = d·expand_k/H
//          (rotary over the whole head, half-split layout, base 10000, as fla's RotaryEmbedding)
//   v    = v_proj x                                           [B, T, H, V], V = d·expand_v/H
//   S_t  = γ_h S_{t−1} + k_t v_tᵀ,  o_t = scale · S_tᵀ q_t,  γ_h = 1 − 2^(−5−h)   (fixed per head:
//          ops::gla_chunk with the constant log gate log γ_h on every key channel)
//   y    = o_proj(RMSNorm_head(o) ⊙ swish(g_proj x))   (output gate optional; one norm weight
//          shared by the heads, over V)
// Weight names follow fla: q_proj, k_proj, v_proj, g_proj, o_proj and the norm, which fla calls
// "g_norm_swish_gate" when it is fused with the swish output gate (its default) and "g_norm"
// without the gate. Linear weights N(0, initializer_range), norm weight 1.
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"
#include "state/gla_state.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>
#include <memory>
#include <optional>

namespace lintime::layers {

struct MultiScaleRetentionOptions {
  int64_t hidden_size = 0;
  int64_t num_heads = 2;  // the GSA paper's MQAR baseline (fla's default is 8)
  double expand_k = 1.0;
  double expand_v = 2.0;
  bool use_output_gate = true;
  double norm_eps = 1e-5;
  double rotary_base = 10000.0;
  std::optional<double> scale;  // nullopt = head_k_dim^-0.5
  double initializer_range = 0.02;
};

class MultiScaleRetention : public Module {
 private:
  struct Dims {
    int64_t key_dim, value_dim, head_k_dim, head_v_dim;
  };
  static Dims validated_dims(const MultiScaleRetentionOptions& options);
  MultiScaleRetentionOptions options_;
  Dims dims_;
  at::Tensor inverse_frequency_;  // [K/2] fp64, CPU

 public:
  // Validates the options (one lintime::Error line naming the option) and initialises the
  // weights from `generator` on the CPU in fp32.
  MultiScaleRetention(const MultiScaleRetentionOptions& options, at::Generator& generator);

  // x [B, T, hidden_size] -> [B, T, hidden_size] in x's dtype.
  // state == nullptr: stateless forward from position 0 (training; autograd through
  // ops::gla_chunk). Otherwise (from make_state) x continues each sequence at its position:
  // T == 1 decodes in place (ops::gla_step_), T > 1 prefills and replaces the state.
  at::Tensor forward(const at::Tensor& x, state::RetentionLayerState* state = nullptr);

  // A zero state for `batch` sequences at position 0 (fp32, fp64 for fp64 dtype).
  state::RetentionLayerState make_state(int64_t batch, const at::Device& device, at::ScalarType dtype = at::kFloat) const;

  // The log decay of each head, log(1 − 2^(−5−h)) [H], made with `options` (dtype, device).
  at::Tensor log_decays(const at::TensorOptions& options) const;
  double scale() const;

  // num_heads · head_k_dim · head_v_dim fp32 values (the position is not counted).
  int64_t state_bytes_per_sequence() const { return state_bytes_per_sequence(options_); }
  static int64_t state_bytes_per_sequence(const MultiScaleRetentionOptions& options);
  static int64_t parameter_count_for(const MultiScaleRetentionOptions& options);

  const MultiScaleRetentionOptions& options() const { return options_; }
  int64_t head_k_dim() const { return dims_.head_k_dim; }
  int64_t head_v_dim() const { return dims_.head_v_dim; }

  Linear q_proj, k_proj, v_proj;
  std::unique_ptr<Linear> g_proj;  // output gate d -> value_dim, only with use_output_gate
  RMSNorm g_norm;                  // over head_v_dim
  Linear o_proj;
};

}  // namespace lintime::layers
