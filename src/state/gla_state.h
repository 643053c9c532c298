// Decoding state of one GLA layer: the recurrent state S [B, H, K, V] (fp32; fp64 for fp64
// models). Plain data, header-only.
#pragma once

#include "state/layer_state.h"

#include <ATen/ATen.h>

#include <vector>

namespace lintime::state {

struct GlaLayerState : LayerState {
  at::Tensor state;

  std::vector<at::Tensor*> tensors() override { return {&state}; }
};

}  // namespace lintime::state
