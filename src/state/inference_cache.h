// Per-layer inference state of a GSA model: the two recurrent states of every key/value head
// and, with short convolutions, the last conv_size − 1 inputs of q, k and v. Layers own weights,
// this cache owns the state (style.md habit 5). Plain data only (header-only, ATen only), so
// that layers and models can use it without linking anything above them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lintime::state {

struct GsaLayerState {
  at::Tensor state_k;  // [B, H, K, M] fp32 (fp64 for fp64 models)
  at::Tensor state_v;  // [B, H, M, V] fp32 (fp64 for fp64 models)
  at::Tensor conv_q;   // [B, W-1, HQ*K] input dtype, undefined without short conv
  at::Tensor conv_k;   // [B, W-1, H*K]
  at::Tensor conv_v;   // [B, W-1, H*V]

  int64_t batch_size() const { return state_k.defined() ? state_k.size(0) : 0; }

  // Zeros every state in place (a fresh sequence in each row).
  void reset() {
    for (at::Tensor* tensor : {&state_k, &state_v, &conv_q, &conv_k, &conv_v}) {
      if (tensor->defined()) tensor->zero_();
    }
  }

  int64_t bytes() const {
    int64_t total = 0;
    for (const at::Tensor* tensor : {&state_k, &state_v, &conv_q, &conv_k, &conv_v}) {
      if (tensor->defined()) total += tensor->numel() * static_cast<int64_t>(tensor->element_size());
    }
    return total;
  }
};

class InferenceCache {
 public:
  InferenceCache() = default;
  explicit InferenceCache(std::vector<GsaLayerState> layers) : layers_(std::move(layers)) {}

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  int64_t batch_size() const { return layers_.empty() ? 0 : layers_.front().batch_size(); }
  // Tokens consumed since the last reset (prefill + steps).
  int64_t seen_tokens() const { return seen_tokens_; }
  void advance(int64_t tokens) { seen_tokens_ += tokens; }

  GsaLayerState& layer(int64_t index) {
    if (index < 0 || index >= num_layers()) {
      throw std::out_of_range("InferenceCache: layer " + std::to_string(index) + " out of range [0, " +
                              std::to_string(num_layers()) + ")");
    }
    return layers_[static_cast<size_t>(index)];
  }

  void reset() {
    for (auto& layer_state : layers_) layer_state.reset();
    seen_tokens_ = 0;
  }

  // Bytes of every state tensor of every layer (all sequences of the batch).
  int64_t bytes() const {
    int64_t total = 0;
    for (const auto& layer_state : layers_) total += layer_state.bytes();
    return total;
  }

 private:
  std::vector<GsaLayerState> layers_;
  int64_t seen_tokens_ = 0;
};

}  // namespace lintime::state
