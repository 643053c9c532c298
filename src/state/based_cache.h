// Per-layer decoding state of a BASED language model: each layer holds the state of its kind of
// mixer, all of fixed size whatever the number of tokens seen (based.md §1–3):
//   short convolution: its last k − 1 inputs [B, k − 1, 2 d];
//   Taylor linear attention: S [B, H, E, d_v] and z [B, H, E] (fp32; E = 1 + d' + d'²);
//   sliding window: ring buffers of the last w keys (after rotary) and values [B, w, H, D] and
//   the number of tokens written [B].
// Layers own weights, this cache owns the state (style.md habit 5). Plain data, header-only.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace lintime::state {

struct BasedLayerState {
  at::Tensor conv;
  at::Tensor state, normalizer;
  at::Tensor key_cache, value_cache, positions;

  int64_t bytes() const {
    int64_t total = 0;
    for (const at::Tensor* tensor : {&conv, &state, &normalizer, &key_cache, &value_cache, &positions}) {
      if (tensor->defined()) total += tensor->numel() * static_cast<int64_t>(tensor->element_size());
    }
    return total;
  }
};

struct BasedCache {
  std::vector<BasedLayerState> layers;
  int64_t seen_tokens = 0;  // tokens consumed by prefill and steps

  int64_t bytes() const {
    int64_t total = 0;
    for (const auto& layer : layers) total += layer.bytes();
    return total;
  }
};

}  // namespace lintime::state
