// Decoding state of one GLA layer: the recurrent state S [B, H, K, V] (fp32; fp64 for fp64
// models). Plain data, header-only.
#pragma once

#include "state/layer_state.h"

#include <ATen/ATen.h>

#include <memory>
#include <vector>

namespace lintime::state {

struct GlaLayerState : LayerState {
  at::Tensor state;

  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<GlaLayerState>(); }
  std::vector<at::Tensor*> tensors() override { return {&state}; }
  std::vector<at::Tensor*> recurrent_tensors() override { return {&state}; }
};

}  // namespace lintime::state
