// Mamba (Gu & Dao 2023), the selective-scan block of mamba_ssm as fla's Mamba layer builds it:
//   x, z = in_proj(u)                                   [B, T, d_inner] each, d_inner = expand·d
//   x    = SiLU(causal depthwise conv1d(x))             kernel d_conv, with bias (conv_bias)
//   dt_low, B, C = x_proj(x)                            [B, T, dt_rank], [B, T, d_state] × 2
//   dt   = softplus(dt_proj(dt_low))                    [B, T, d_inner]
//   y    = selective_scan(x, dt, A = −exp(A_log), B, C, D)   (ops/ssm/selective_scan.h)
//   out  = out_proj(y ⊙ SiLU(z))
// Weight names follow fla: in_proj.weight [2·d_inner, d], conv1d.weight [d_inner, 1, d_conv],
// conv1d.bias, x_proj.weight, dt_proj.weight, dt_proj.bias, A_log [d_inner, d_state],
// D [d_inner], out_proj.weight. Init as mamba_ssm / fla: in_proj, x_proj, out_proj
// N(0, initializer_range); conv1d torch's Conv1d default U(±1/√d_conv); dt_proj.weight
// U(±dt_rank^-0.5·dt_scale); dt_proj.bias the inverse softplus of dt drawn log-uniformly in
// [dt_min, dt_max] and floored at dt_init_floor; A_log = log(1..d_state) per channel; D = 1.
#pragma once

#include "layers/linear.h"
#include "layers/module.h"
#include "layers/short_convolution.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::state {
struct MambaLayerState;
}

namespace lintime::layers {

struct MambaOptions {
  int64_t hidden_size = 0;
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0 = "auto": ceil(hidden_size / 16)
  double dt_min = 0.001;
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  double dt_scale = 1.0;
  bool conv_bias = true;
  bool bias = false;  // in_proj and out_proj
  double initializer_range = 0.02;
};

class Mamba : public Module {
 private:
  struct Dims {
    int64_t d_inner, dt_rank;
  };
  static Dims validated_dims(const MambaOptions& options);
  // Declared first: the projections below are sized from these.
  MambaOptions options_;
  Dims dims_;

 public:
  // Validates the options (one lintime::Error line naming the option) and initialises the
  // weights from `generator` on the CPU in fp32.
  Mamba(const MambaOptions& options, at::Generator& generator);

  // x [B, T, hidden_size] -> [B, T, hidden_size] in x's dtype.
  // state == nullptr: stateless forward (training; autograd through the scan: the token loop on
  // CPUs, the chunked form elsewhere, as mamba.cpp measured).
  // state (from make_state): T == 1 decodes in place (conv step, selective_scan_step_inplace);
  // T > 1 prefills from it and leaves the last d_conv − 1 conv inputs and the final scan state.
  at::Tensor forward(const at::Tensor& x, state::MambaLayerState* state = nullptr);

  // A zero state for `batch` sequences: conv history in `dtype`, scan state in fp32 (fp64 for
  // fp64 models).
  state::MambaLayerState make_state(int64_t batch, const at::Device& device, at::ScalarType dtype = at::kFloat) const;

  // fp32 values per sequence: d_inner·d_state (scan) + d_inner·(d_conv − 1) (conv history), ×4.
  int64_t state_bytes_per_sequence() const { return state_bytes_per_sequence(options_); }
  static int64_t state_bytes_per_sequence(const MambaOptions& options);
  static int64_t parameter_count_for(const MambaOptions& options);

  const MambaOptions& options() const { return options_; }
  int64_t d_inner() const { return dims_.d_inner; }
  int64_t dt_rank() const { return dims_.dt_rank; }

  Linear in_proj;          // d -> 2·d_inner (x, then z)
  ShortConvolution conv1d;  // depthwise over d_inner, SiLU
  Linear x_proj;           // d_inner -> dt_rank + 2·d_state (no bias)
  Linear dt_proj;          // dt_rank -> d_inner (bias)
  at::Tensor A_log;        // [d_inner, d_state]
  at::Tensor D;            // [d_inner]
  Linear out_proj;         // d_inner -> d
};

}  // namespace lintime::layers
