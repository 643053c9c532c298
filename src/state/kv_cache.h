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
#include <memory>
#include <utility>
#include <vector>

namespace lintime::state {

struct KvLayerCache : LayerState {
  at::Tensor keys, values;  // [B, H_kv, capacity, D]
  int64_t length = 0;
  int64_t reserve = 0;  // positions to allocate at the first append (0: grow as needed)

  std::vector<at::Tensor*> tensors() override { return {&keys, &values}; }
  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<KvLayerCache>(); }
  // The rows' first `tokens` keys and values (nothing when tokens is 0).
  std::unique_ptr<LayerState> gather(const at::Tensor& rows, int64_t tokens) const override {
    auto part = std::make_unique<KvLayerCache>();
    part->reserve = reserve;
    if (tokens > 0) {
      const at::Tensor on_device = rows.to(keys.device());
      part->keys = keys.narrow(2, 0, tokens).index_select(0, on_device);
      part->values = values.narrow(2, 0, tokens).index_select(0, on_device);
      part->length = tokens;
    }
    return part;
  }
  // Copies the part's filled positions into its rows, growing the capacity to the part's.
  void scatter(LayerState& state, const at::Tensor& rows) override {
    const auto& part = static_cast<const KvLayerCache&>(state);
    if (part.length == 0) return;
    const int64_t capacity = std::max<int64_t>(part.keys.size(2), keys.defined() ? keys.size(2) : 0);
    if (!keys.defined() || keys.size(2) < capacity) {
      const int64_t slots = keys.defined() ? keys.size(0) : slot_count;
      at::Tensor new_keys = at::zeros({slots, part.keys.size(1), capacity, part.keys.size(3)}, part.keys.options());
      at::Tensor new_values = at::zeros({slots, part.values.size(1), capacity, part.values.size(3)}, part.values.options());
      if (keys.defined()) {
        new_keys.narrow(2, 0, keys.size(2)).copy_(keys);
        new_values.narrow(2, 0, values.size(2)).copy_(values);
      }
      keys = new_keys;
      values = new_values;
    }
    const at::Tensor on_device = rows.to(keys.device());
    keys.narrow(2, 0, part.length).index_copy_(0, on_device, part.keys.narrow(2, 0, part.length));
    values.narrow(2, 0, part.length).index_copy_(0, on_device, part.values.narrow(2, 0, part.length));
    length = std::max(length, part.length);
  }
  // A row's positions past its sequence's length are never read: nothing to clear.
  void reset_rows(const at::Tensor&) override {}
  bool rows_share_a_position() const override { return true; }
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
};

}  // namespace lintime::state
