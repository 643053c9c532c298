// Gated linear attention (GLA, Yang et al. 2024) as the sequence mixer of the MQAR baselines,
// following fla's GatedLinearAttention layer with its defaults and no short convolution:
//   q, k = φ(q_proj x), φ(k_proj x)                              [B, T, H, K], K = d·expand_k/H
//          φ = fla's feature_map: none by default, relu or swish (the T2R adaptation uses relu)
//   v    = v_proj x                                             [B, T, H, V], V = d·expand_v/H
//   gk   = logsigmoid(gk_proj x) / gate_logit_normalizer       [B, T, H, K]
//          gk_proj is low rank: d → gate_low_rank_dim (no bias) → key_dim (bias)
//   S_t  = Diag(exp(gk_t)) S_{t−1} + k_t v_tᵀ,  o_t = scale · S_tᵀ q_t   (ops::gla_chunk,
//          gate_on_value = false, scale = K^-0.5 by default)
//   y    = o_proj(RMSNorm_head(o) ⊙ swish(g_proj x))   (output gate optional; the RMSNorm is
//          per head over V with one shared weight, eps norm_eps)
// Weight names follow fla ("gk_proj.0.weight", "gk_proj.1.weight", "gk_proj.1.bias", ...).
// Linear weights N(0, initializer_range), biases 0, norm weight 1.
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace lintime::layers {

struct GatedLinearAttentionOptions {
  int64_t hidden_size = 0;
  int64_t num_heads = 2;  // the GSA paper's MQAR baseline
  double expand_k = 0.5;
  double expand_v = 1.0;
  int64_t gate_low_rank_dim = 16;
  double gate_logit_normalizer = 16.0;
  bool use_output_gate = true;
  double norm_eps = 1e-5;
  std::optional<double> scale;  // nullopt = head_k_dim^-0.5
  double initializer_range = 0.02;
  std::optional<std::string> feature_map;  // nullopt (none), "relu", "swish" or "silu" (fla's ACT2FN names)
  // The norm's parameter name: fla's layer calls it "g_norm_swish_gate" when it fuses the norm
  // with the swish output gate (its language models' default), "g_norm" otherwise.
  std::string norm_name = "g_norm";
};

class GatedLinearAttention : public Module {
 private:
  struct Dims {
    int64_t key_dim, value_dim, head_k_dim, head_v_dim;
  };
  static Dims validated_dims(const GatedLinearAttentionOptions& options);
  GatedLinearAttentionOptions options_;
  Dims dims_;

 public:
  // Validates the options (one lintime::Error line naming the option) and initialises the
  // weights from `generator` on the CPU in fp32.
  GatedLinearAttention(const GatedLinearAttentionOptions& options, at::Generator& generator);

  // x [B, T, hidden_size] -> [B, T, hidden_size] in x's dtype.
  // state == nullptr: stateless forward (autograd through ops::gla_chunk).
  // state [B, H, K, V] (fp32; from make_state): T == 1 decodes in place (ops::gla_step_),
  // T > 1 prefills from it and replaces it with the final state.
  at::Tensor forward(const at::Tensor& x, at::Tensor* state = nullptr);

  // A zero recurrent state [batch, H, K, V] (fp32, fp64 for fp64 dtype).
  at::Tensor make_state(int64_t batch, const at::Device& device, at::ScalarType dtype = at::kFloat) const;

  // num_heads · head_k_dim · head_v_dim fp32 values = key_dim · head_v_dim · 4 bytes.
  int64_t state_bytes_per_sequence() const { return state_bytes_per_sequence(options_); }
  static int64_t state_bytes_per_sequence(const GatedLinearAttentionOptions& options);
  static int64_t parameter_count_for(const GatedLinearAttentionOptions& options);

  const GatedLinearAttentionOptions& options() const { return options_; }
  int64_t key_dim() const { return dims_.key_dim; }
  int64_t value_dim() const { return dims_.value_dim; }
  int64_t head_k_dim() const { return dims_.head_k_dim; }
  int64_t head_v_dim() const { return dims_.head_v_dim; }
  double scale() const;

  // fla's gk_proj, a two-layer Sequential: "0" d -> rank (no bias), "1" rank -> key_dim (bias).
  class LowRankProjection : public Module {
   public:
    LowRankProjection(int64_t in_features, int64_t rank, int64_t out_features, double std,
                      at::Generator& generator);
    at::Tensor forward(const at::Tensor& x) const { return up.forward(down.forward(x)); }
    Linear down, up;
  };

  Linear q_proj, k_proj, v_proj;
  LowRankProjection gk_proj;
  std::unique_ptr<Linear> g_proj;  // output gate d -> value_dim, only with use_output_gate
  RMSNorm g_norm;                  // over head_v_dim
  Linear o_proj;
};

}  // namespace lintime::layers
