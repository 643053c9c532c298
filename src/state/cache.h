// The decoding state of a whole model: one LayerState per layer, each holding its rows for the
// same sequences, and the count of tokens consumed. Which mixer a layer has does not matter
// here; the layer's mixer made its state (models/mixer.h) and reads it back. Header-only.
#pragma once

#include "state/layer_state.h"

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lintime::state {

class Cache {
 public:
  Cache() = default;
  Cache(std::vector<std::unique_ptr<LayerState>> layers, int64_t batch)
      : layers_(std::move(layers)), batch_(batch) {}

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  // Sequences the states hold rows for.
  int64_t batch_size() const { return batch_; }
  // Tokens consumed since the last reset (prefill + steps).
  int64_t seen_tokens() const { return seen_tokens_; }
  void advance(int64_t tokens) { seen_tokens_ += tokens; }

  LayerState& layer(int64_t index) {
    if (index < 0 || index >= num_layers()) {
      throw std::out_of_range("Cache: layer " + std::to_string(index) + " out of range [0, " +
                              std::to_string(num_layers()) + ")");
    }
    return *layers_[static_cast<size_t>(index)];
  }

  // Forgets every sequence (each layer's reset).
  void reset() {
    for (auto& layer_state : layers_) layer_state->reset();
    seen_tokens_ = 0;
  }

  // Bytes allocated by every state tensor of every layer (all sequences).
  int64_t allocated_bytes() const {
    int64_t total = 0;
    for (const auto& layer_state : layers_) total += layer_state->allocated_bytes();
    return total;
  }

 private:
  std::vector<std::unique_ptr<LayerState>> layers_;
  int64_t batch_ = 0;
  int64_t seen_tokens_ = 0;
};

}  // namespace lintime::state
