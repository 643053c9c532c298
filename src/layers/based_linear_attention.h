// BASED's linear attention as a sequence mixer (docs based.md §1; zoology's `Based` mixer used in
// the MQAR protocols): per head, q and k are projected to feature_dim (d') dims and v to
// d / num_heads, and a causal linear attention with feature map φ mixes them:
//   q, k = proj_q x, proj_k x        [B, T, H, d']      (no biases, no positional encoding)
//   v    = proj_v x                  [B, T, H, d / H]
//   o    = φ(q)ᵀ S / (φ(q)·z + eps)   (normalize; or the norm-free read-out φ(q)ᵀ S)
//   y    = out_proj(o)
// φ is the feature map: "taylor" (BASED's second-order Taylor map, through
// ops::taylor_attention_chunk, which never builds φ) or one of zoology's elementwise baselines
// "relu" (max(x, 0) clamped below at eps), "elu+1" (elu(x) + 1) and "identity"; those run the GLA
// op with zero gates (no decay), the normaliser z as one more value column of ones.
// Weight names follow zoology ("proj_q", "proj_k", "proj_v", "out_proj"); Linear weights
// N(0, initializer_range).
#pragma once

#include "layers/linear.h"
#include "layers/module.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace lintime::layers {

struct BasedLinearAttentionOptions {
  int64_t hidden_size = 0;
  int64_t feature_dim = 16;   // d'
  int64_t num_heads = 1;      // zoology's MQAR setting (the 40,548-byte state of based.md §6)
  bool normalize = true;      // the paper's read-out; false: ThunderKittens' norm-free one
  double eps = 1e-12;         // the paper's code
  std::string feature_map = "taylor";  // "taylor" | "relu" | "elu+1" | "identity"
  double initializer_range = 0.02;
  double out_initializer_range = -1.0;  // out_proj's std; < 0: initializer_range
};

class BasedLinearAttention : public Module {
 public:
  // Validates the options (one lintime::Error line naming the option) and initialises the
  // weights from `generator` on the CPU in fp32.
  BasedLinearAttention(const BasedLinearAttentionOptions& options, at::Generator& generator);

  // x [B, T, hidden_size] -> [B, T, hidden_size] in x's dtype.
  at::Tensor forward(const at::Tensor& x) const;
  // The same, continuing the decoding state S [B, H, E, d_v], z [B, H, E] (Taylor map only):
  // undefined tensors start from zero (a prefill), one token takes the step op. Both are left
  // after the last token of x.
  at::Tensor forward_cached(const at::Tensor& x, at::Tensor& state, at::Tensor& normalizer) const;

  // Zoology's accounting (based.md §6): per head d_v·E + E fp32 values, E = 1 + d' + d'(d'+1)/2
  // for the Taylor map (the symmetric feature count; lintime's states keep the full 1 + d' + d'²
  // layout), E = d' for the elementwise maps.
  int64_t state_bytes_per_sequence() const { return state_bytes_per_sequence(options_); }
  static int64_t state_bytes_per_sequence(const BasedLinearAttentionOptions& options);
  static int64_t parameter_count_for(const BasedLinearAttentionOptions& options);

  const BasedLinearAttentionOptions& options() const { return options_; }

 private:
  static int64_t validated_head_dim(const BasedLinearAttentionOptions& options);
  BasedLinearAttentionOptions options_;
  int64_t head_dim_;

 public:
  Linear proj_q, proj_k, proj_v, out_proj;
};

}  // namespace lintime::layers
