// fla's GatedSlotAttention layer (gsa.md §3): bias-free q/k/v/f projections, feature map on q and
// k, SiLU on v, slot gates g = logsigmoid(f) / normalizer with writes s = 1 - exp(g), the GSA
// recurrence through the registered ops, SiLU + RMSNorm over the merged heads, output projection.
// One recurrent state per key/value head (no repeat for grouped queries).
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/rms_norm.h"
#include "layers/short_convolution.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace lintime::state {
struct GsaLayerState;
struct GsaRows;
}

namespace lintime::layers {

struct GatedSlotAttentionOptions {
  int64_t hidden_size = 0;
  int64_t num_heads = 4;
  std::optional<int64_t> num_kv_heads;  // nullopt = num_heads
  int64_t num_slots = 64;
  double expand_k = 1.0;
  double expand_v = 1.0;
  double gate_logit_normalizer = 8.0;
  std::string feature_map = "swish";  // "swish" or "relu"
  bool use_short_conv = false;
  int64_t conv_size = 4;
  bool elementwise_affine = true;  // g_norm has a weight
  double norm_eps = 1e-5;          // eps of g_norm
  std::optional<double> scale;     // nullopt = 1.0 as fla's layer; MQAR uses head_k_dim^-0.5
  double initializer_range = 0.02;
};

class GatedSlotAttention : public Module {
 private:
  struct Dims {
    int64_t num_kv_heads, key_dim, value_dim, head_k_dim, head_v_dim;
  };
  // Checks the options (one lintime::Error line naming the option) and derives the sizes.
  static Dims validated_dims(const GatedSlotAttentionOptions& options);
  struct Features {
    at::Tensor q, k, v, s, g;  // [B, T, HQ, K], [B, T, H, K], [B, T, H, V], [B, T, H, M] twice
    bool swish_pending = false;  // q, k, v still want the swish (ops::gsa_chunk_of_swish applies it)
  };
  // The recurrence's inputs from x: projections, short convolutions (continuing the histories
  // of `histories` when given), feature maps and slot gates. With defer_swish and the swish
  // feature map, q, k, v come before it (swish_pending).
  Features features(const at::Tensor& x, state::GsaLayerState* histories, const std::optional<at::Tensor>& cu_seqlens,
                    bool defer_swish = false) const;
  // o [B, T, HQ, V] -> o_proj(g_norm(silu(o))) [B, T, hidden_size].
  at::Tensor output(const at::Tensor& o) const;
  // Declared first: the projections below are sized from these.
  GatedSlotAttentionOptions options_;
  Dims dims_;

 public:
  // Validates the options (one clear lintime::Error line) and initialises weights
  // N(0, initializer_range) from `generator` on the CPU in fp32.
  GatedSlotAttention(const GatedSlotAttentionOptions& options, at::Generator& generator);

  // x [B, T, hidden_size] -> [B, T, hidden_size] in x's dtype.
  // state == nullptr: training / stateless forward (autograd through ops::gsa_chunk).
  // state != nullptr: T == 1 decodes one token in place (ops::gsa_step_); T > 1 prefills from
  // and into the state (ops::gsa_chunk with initial and final states).
  // cu_seqlens [N+1]: varlen packing with B == 1 (state then holds N sequences).
  at::Tensor forward(const at::Tensor& x, state::GsaLayerState* state = nullptr,
                     const std::optional<at::Tensor>& cu_seqlens = std::nullopt);

  // x [B, T, hidden_size] for the server's slots rows.slots->rows, continued in place: T == 1
  // steps each row's states where they lie (ops::gsa_step_rows_); T > 1 gathers the rows' states,
  // prefills and writes them back. Convolution histories are gathered and written back.
  at::Tensor forward_rows(const at::Tensor& x, state::GsaRows& rows);

  // A zero state for `batch` sequences: fp32 recurrent states (fp64 when compute_dtype is fp64),
  // conv history in `dtype`.
  state::GsaLayerState make_state(int64_t batch, const at::Device& device,
                                  at::ScalarType dtype = at::kFloat) const;

  // Recurrent state bytes per sequence in fp32:
  // num_kv_heads * (head_k_dim * M + M * head_v_dim) * 4, plus the conv history if any.
  int64_t state_bytes_per_sequence() const { return state_bytes_per_sequence(options_); }
  static int64_t state_bytes_per_sequence(const GatedSlotAttentionOptions& options);
  // Parameters of a layer with these options, without building it.
  static int64_t parameter_count_for(const GatedSlotAttentionOptions& options);

  const GatedSlotAttentionOptions& options() const { return options_; }
  int64_t num_heads() const { return options_.num_heads; }
  int64_t num_kv_heads() const { return dims_.num_kv_heads; }
  int64_t num_slots() const { return options_.num_slots; }
  int64_t key_dim() const { return dims_.key_dim; }
  int64_t value_dim() const { return dims_.value_dim; }
  int64_t head_k_dim() const { return dims_.head_k_dim; }
  int64_t head_v_dim() const { return dims_.head_v_dim; }
  double scale() const { return options_.scale.value_or(1.0); }

  Linear q_proj, k_proj, v_proj, f_proj, o_proj;  // q, k, v, f weights back to back (place_adjacent)
  RMSNorm g_norm;
  std::unique_ptr<ShortConvolution> q_conv1d, k_conv1d, v_conv1d;  // only with use_short_conv

 protected:
  void parameters_moved() override;
};

}  // namespace lintime::layers
