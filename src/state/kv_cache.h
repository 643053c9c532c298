// Per-layer KV cache of a Transformer++ (Llama / Mistral): the keys (after rotary) and values of
// every token seen, [B, H_kv, capacity, D] in the model dtype, of which the first `length`
// positions are filled. Unlike GSA's and BASED's states it grows with the sequence: capacity
// doubles when full (or is reserved up front), so appending a token costs one copy of it.
// Layers own weights, this cache owns the state (style.md habit 5). Plain data, header-only.
#pragma once

#include "state/layer_state.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace lintime::state {

struct KvLayerCache : LayerState {
  at::Tensor keys, values;  // [B, H_kv, capacity, D]
  int64_t length = 0;
  int64_t reserve = 0;  // positions to allocate at the first append (0: grow as needed)

  std::vector<at::Tensor*> tensors() override { return {&keys, &values}; }
  void expect_tokens(int64_t tokens) override { reserve = tokens; }
  // Forgets the tokens (the next append starts at position 0, in a new allocation).
  void reset() override {
    keys = at::Tensor();
    values = at::Tensor();
    length = 0;
  }

  // Appends k, v [B, H_kv, T, D]; returns the filled keys and values [B, H_kv, length, D].
  std::pair<at::Tensor, at::Tensor> append(const at::Tensor& k, const at::Tensor& v) {
    const int64_t needed = length + k.size(2);
    if (!keys.defined() || keys.size(2) < needed) {
      const int64_t old_capacity = keys.defined() ? keys.size(2) : 0;
      const int64_t capacity = std::max<int64_t>({needed, 2 * old_capacity, reserve, 16});
      at::Tensor new_keys = at::empty({k.size(0), k.size(1), capacity, k.size(3)}, k.options());
      at::Tensor new_values = at::empty({v.size(0), v.size(1), capacity, v.size(3)}, v.options());
      if (length > 0) {
        new_keys.narrow(2, 0, length).copy_(keys.narrow(2, 0, length));
        new_values.narrow(2, 0, length).copy_(values.narrow(2, 0, length));
      }
      keys = new_keys;
      values = new_values;
    }
    keys.narrow(2, length, k.size(2)).copy_(k);
    values.narrow(2, length, v.size(2)).copy_(v);
    length = needed;
    return {keys.narrow(2, 0, length), values.narrow(2, 0, length)};
  }

  int64_t bytes() const {
    if (!keys.defined()) return 0;
    return (keys.numel() * keys.element_size() + values.numel() * values.element_size()) / keys.size(2) * length;
  }
};

}  // namespace lintime::state
