// BASED's linear attention mixer: projections around ops::taylor_attention_chunk (see the header).
#include "layers/based_linear_attention.h"

#include "core/error.h"
#include "core/tensor_checks.h"
#include "ops/register/ops.h"

#include <ATen/ATen.h>

namespace lintime::layers {

int64_t BasedLinearAttention::validated_head_dim(const BasedLinearAttentionOptions& options) {
  const char* who = "BasedLinearAttention";
  LINTIME_CHECK(options.hidden_size > 0, who, ": hidden_size must be positive, got ", options.hidden_size);
  LINTIME_CHECK(options.feature_dim > 0, who, ": feature_dim must be positive, got ", options.feature_dim);
  LINTIME_CHECK(options.num_heads > 0 && options.hidden_size % options.num_heads == 0, who,
                ": num_heads must be positive and divide hidden_size = ", options.hidden_size, ", got ",
                options.num_heads);
  LINTIME_CHECK(options.eps >= 0.0, who, ": eps must be >= 0, got ", options.eps);
  const std::string& map = options.feature_map;
  LINTIME_CHECK(map == "taylor" || map == "relu" || map == "elu+1" || map == "identity", who,
                ": feature_map must be \"taylor\", \"relu\", \"elu+1\" or \"identity\", got \"", map, "\"");
  return options.hidden_size / options.num_heads;
}

namespace {

// zoology's elementwise feature maps (feature_maps/base.py): ReLU clamps at eps so that the
// normaliser stays positive.
at::Tensor elementwise_feature_map(const at::Tensor& x, const std::string& map, double eps) {
  if (map == "relu") return at::relu(x).clamp_min(eps);
  if (map == "elu+1") return at::elu(x) + 1;
  return x;  // identity
}

}  // namespace

BasedLinearAttention::BasedLinearAttention(const BasedLinearAttentionOptions& options, at::Generator& generator)
    : options_(options),
      head_dim_(validated_head_dim(options)),
      proj_q(options.hidden_size, options.num_heads * options.feature_dim, options.initializer_range, generator),
      proj_k(options.hidden_size, options.num_heads * options.feature_dim, options.initializer_range, generator),
      proj_v(options.hidden_size, options.hidden_size, options.initializer_range, generator),
      out_proj(options.hidden_size, options.hidden_size,
               options.out_initializer_range >= 0 ? options.out_initializer_range : options.initializer_range,
               generator) {
  register_module("proj_q", proj_q);
  register_module("proj_k", proj_k);
  register_module("proj_v", proj_v);
  register_module("out_proj", out_proj);
}

at::Tensor BasedLinearAttention::forward(const at::Tensor& x) const {
  check_shape("BasedLinearAttention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), heads = options_.num_heads;
  const at::Tensor q = proj_q.forward(x).view({batch, length, heads, options_.feature_dim});  // [B, T, H, d']
  const at::Tensor k = proj_k.forward(x).view({batch, length, heads, options_.feature_dim});  // [B, T, H, d']
  const at::Tensor v = proj_v.forward(x).view({batch, length, heads, head_dim_});             // [B, T, H, d/H]
  at::Tensor o;
  if (options_.feature_map == "taylor") {
    o = ops::taylor_attention_chunk(q, k, v, options_.normalize, options_.eps).o;
  } else {
    const at::Tensor q_features = elementwise_feature_map(q, options_.feature_map, options_.eps);
    const at::Tensor k_features = elementwise_feature_map(k, options_.feature_map, options_.eps);
    // A column of ones after v makes the last output column φ(q_t)·z_t.
    const at::Tensor values = options_.normalize ? at::cat({v, at::ones_like(v.narrow(-1, 0, 1))}, -1) : v;
    const at::Tensor no_decay = at::zeros_like(k_features);
    const at::Tensor read = ops::gla_chunk(q_features, k_features, values, no_decay, false, 1.0).o;
    o = options_.normalize ? read.narrow(-1, 0, head_dim_) / (read.narrow(-1, head_dim_, 1) + options_.eps) : read;
  }
  return out_proj.forward(o.reshape({batch, length, options_.hidden_size}));
}

at::Tensor BasedLinearAttention::forward_cached(const at::Tensor& x, at::Tensor& state, at::Tensor& normalizer) const {
  LINTIME_CHECK(options_.feature_map == "taylor", "BasedLinearAttention: decoding state is kept for the Taylor map "
                "only, got feature_map \"", options_.feature_map, "\"");
  check_shape("BasedLinearAttention", "x", x, {{"B", -1}, {"T", -1}, {"hidden_size", options_.hidden_size}});
  const int64_t batch = x.size(0), length = x.size(1), heads = options_.num_heads;
  const at::Tensor q = proj_q.forward(x).view({batch, length, heads, options_.feature_dim});
  const at::Tensor k = proj_k.forward(x).view({batch, length, heads, options_.feature_dim});
  const at::Tensor v = proj_v.forward(x).view({batch, length, heads, head_dim_});
  at::Tensor o;
  if (state.defined() && length == 1) {
    o = ops::taylor_attention_step_(q.select(1, 0), k.select(1, 0), v.select(1, 0), options_.normalize, options_.eps,
                                    state, normalizer)
            .unsqueeze(1);
  } else {
    auto result = ops::taylor_attention_chunk(q, k, v, options_.normalize, options_.eps,
                                              state.defined() ? std::optional<at::Tensor>(state) : std::nullopt,
                                              normalizer.defined() ? std::optional<at::Tensor>(normalizer) : std::nullopt,
                                              /*output_final_state=*/true);
    o = result.o;
    state = result.final_state;
    normalizer = result.final_normalizer;
  }
  return out_proj.forward(o.reshape({batch, length, options_.hidden_size}));
}

int64_t BasedLinearAttention::state_bytes_per_sequence(const BasedLinearAttentionOptions& options) {
  const int64_t head_dim = validated_head_dim(options), d = options.feature_dim;
  const int64_t features = options.feature_map == "taylor" ? 1 + d + d * (d + 1) / 2 : d;
  return options.num_heads * (head_dim * features + features) * 4;
}

int64_t BasedLinearAttention::parameter_count_for(const BasedLinearAttentionOptions& options) {
  validated_head_dim(options);
  const int64_t d = options.hidden_size;
  return 2 * d * options.num_heads * options.feature_dim + 2 * d * d;  // proj_q, proj_k; proj_v, out_proj
}

}  // namespace lintime::layers
