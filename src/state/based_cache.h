// Decoding states of the BASED language model's mixers, each of fixed size whatever the number
// of tokens seen (based.md §1–3):
//   gated short convolution: its last k − 1 inputs [B, k − 1, 2 d];
//   Taylor linear attention: S [B, H, E, d_v] and z [B, H, E] (fp32; E = 1 + d' + d'²),
//     allocated by the prefill;
//   sliding window: ring buffers of the last w keys (after rotary) and values [B, w, H, D] and
//     the number of tokens written [B], allocated by the prefill; the rows of one forward
//     share a position (the rotary angle is read once).
// Plain data, header-only.
#pragma once

#include "state/layer_state.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace lintime::state {

struct ConvLayerState : LayerState {
  at::Tensor conv;

  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<ConvLayerState>(); }
  std::vector<at::Tensor*> tensors() override { return {&conv}; }
};

struct TaylorLayerState : LayerState {
  at::Tensor state, normalizer;

  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<TaylorLayerState>(); }
  std::vector<at::Tensor*> tensors() override { return {&state, &normalizer}; }
  std::vector<at::Tensor*> recurrent_tensors() override { return {&state, &normalizer}; }
};

struct WindowLayerState : LayerState {
  at::Tensor key_cache, value_cache, positions;

  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<WindowLayerState>(); }
  std::vector<at::Tensor*> tensors() override { return {&key_cache, &value_cache, &positions}; }
  // Rows with no token yet get no buffers: their first forward is a prefill from position 0.
  std::unique_ptr<LayerState> gather(const at::Tensor& rows, int64_t tokens) const override {
    if (tokens == 0 || !key_cache.defined()) return empty_like();
    return LayerState::gather(rows, tokens);
  }
  bool rows_share_a_position() const override { return true; }
};

}  // namespace lintime::state
