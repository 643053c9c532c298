// One layer's decoding state, whatever its mixer: recurrent states, a KV cache, a ring buffer,
// a convolution's history. Every tensor a state holds has the sequence as its first dimension,
// so a cache can zero, gather and scatter the rows of some sequences without knowing the mixer
// (state/cache.h). Layers own weights, states own what decoding keeps (style.md habit 5).
// Header-only, ATen only, so that layers can use it without linking anything above them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace lintime::state {

class LayerState {
 public:
  virtual ~LayerState() = default;
  // The state's tensors (undefined ones included), each [sequences, ...]. Pointers to members:
  // replacing a tensor through them replaces the state's own.
  virtual std::vector<at::Tensor*> tensors() = 0;
  // Forgets every sequence: zeros each tensor (a state that grows with the sequence, the KV
  // cache, also forgets its length).
  virtual void reset() {
    for (at::Tensor* tensor : tensors()) {
      if (tensor->defined()) tensor->zero_();
    }
  }
  // A hint that the sequences will reach `tokens` tokens (0: unknown): a state that grows with
  // the sequence (the KV cache) allocates that much at once. Constant-size states ignore it.
  virtual void expect_tokens(int64_t tokens) {}
  // Bytes allocated by the state's tensors (all sequences).
  int64_t allocated_bytes() const {
    int64_t total = 0;
    for (const at::Tensor* tensor : const_cast<LayerState*>(this)->tensors()) {
      if (tensor->defined()) total += tensor->numel() * static_cast<int64_t>(tensor->element_size());
    }
    return total;
  }
};

}  // namespace lintime::state
