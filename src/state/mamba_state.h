// Decoding state of one Mamba layer: the last d_conv − 1 inputs of its causal convolution and
// the selective scan's state. Both are fixed in size whatever the number of tokens seen.
// Plain data, header-only.
#pragma once

#include "state/layer_state.h"

#include <ATen/ATen.h>

#include <memory>
#include <vector>

namespace lintime::state {

struct MambaLayerState : LayerState {
  at::Tensor conv;  // [B, d_conv − 1, d_inner] in the model's dtype, oldest input first
  at::Tensor ssm;   // [B, d_inner, d_state] fp32 (fp64 for fp64 models)

  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<MambaLayerState>(); }
  std::vector<at::Tensor*> tensors() override { return {&conv, &ssm}; }
  // The convolution history keeps the activations' dtype (as GSA's).
  std::vector<at::Tensor*> recurrent_tensors() override { return {&ssm}; }
};

}  // namespace lintime::state
