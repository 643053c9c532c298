// Decoding state of one GLA or HGRN2 layer: the recurrent state S [B, H, K, V] (fp32; fp64 for fp64
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

// Decoding state of one retention layer (RetNet): the GLA-form state S [B, H, K, V] and each
// sequence's position [B] (int64), from which the rotary angles of its next tokens follow.
struct RetentionLayerState : LayerState {
  at::Tensor state;
  at::Tensor positions;

  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<RetentionLayerState>(); }
  std::vector<at::Tensor*> tensors() override { return {&state, &positions}; }
  std::vector<at::Tensor*> recurrent_tensors() override { return {&state}; }
};

}  // namespace lintime::state
