// HGRN2 (Qin et al. 2024), the GSA paper's HGRN2 baseline, following fla's HGRN2Attention layer
// without short convolutions or the model-level forget-gate lower bound:
//   q = swish(q_proj x), f = f_proj x                      [B, T, H, F], F = expand_ratio
//   g = logsigmoid(f), k = 1 − exp(g)                      (the key is tied to the forget gate)
//   v = i_proj x                                            [B, T, H, I], I = d / H
//   S_t = Diag(exp(g_t)) S_{t−1} + k_t v_tᵀ,  o_t = F^-1/2 · S_tᵀ q_t   (ops::gla_chunk, the
//          scale fla's chunk_gla takes by default)
//   y = o_proj(RMSNorm(o over all H·I channels))           (one norm over the whole width)
// Heads: fla takes expand_ratio (then H = d / expand_ratio) or num_heads (then expand_ratio =
// d / H); here num_heads 2 by default, as the paper's other linear baselines.
// Weight names follow fla: q_proj, f_proj, i_proj, g_norm, o_proj. Linear weights
// N(0, initializer_range), norm weight 1.
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace lintime::layers {

struct Hgrn2Options {
  int64_t hidden_size = 0;
  int64_t num_heads = 2;
  std::optional<int64_t> expand_ratio;  // given: num_heads = hidden_size / expand_ratio (fla's rule)
  double norm_eps = 1e-5;
  double initializer_range = 0.02;
};

class Hgrn2Attention : public Module {
 private:
  struct Dims {
    int64_t num_heads, head_f_dim, head_i_dim;
  };
  static Dims validated_dims(const Hgrn2Options& options);
  Hgrn2Options options_;
  Dims dims_;

 public:
  // Validates the options (one lintime::Error line naming the option) and initialises the
  // weights from `generator` on the CPU in fp32.
  Hgrn2Attention(const Hgrn2Options& options, at::Generator& generator);

  // x [B, T, hidden_size] -> [B, T, hidden_size] in x's dtype. state == nullptr: stateless
  // forward (training). state [B, H, F, I] (fp32; from make_state): T == 1 decodes in place,
  // T > 1 prefills from it and replaces it with the final state.
  at::Tensor forward(const at::Tensor& x, at::Tensor* state = nullptr);

  // A zero recurrent state [batch, H, F, I] (fp32, fp64 for fp64 dtype).
  at::Tensor make_state(int64_t batch, const at::Device& device, at::ScalarType dtype = at::kFloat) const;

  // H · F · I fp32 values.
  int64_t state_bytes_per_sequence() const { return state_bytes_per_sequence(options_); }
  static int64_t state_bytes_per_sequence(const Hgrn2Options& options);
  static int64_t parameter_count_for(const Hgrn2Options& options);

  int64_t num_heads() const { return dims_.num_heads; }
  int64_t head_f_dim() const { return dims_.head_f_dim; }
  int64_t head_i_dim() const { return dims_.head_i_dim; }
  double scale() const;

  Linear q_proj, f_proj, i_proj;
  RMSNorm g_norm;  // over hidden_size
  Linear o_proj;
};

}  // namespace lintime::layers
