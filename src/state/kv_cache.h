// Per-layer KV cache of a Transformer++ (Llama / Mistral): the keys (after rotary) and values of
// every token seen, [B, capacity, H_kv, D] in the model dtype (token-major, as FlashAttention's
// varlen kernels read keys), of which the first `length` positions are filled. Unlike GSA's and
// BASED's states it grows with the sequence: capacity doubles when full (or is reserved up front),
// so appending a token costs one copy of it.
//
// A server's running batch continues slots at different lengths in one forward through KvRows:
// a view of some slots that appends each row at its own position in the slot cache and attends
// to each row's own keys in place (no gather, no write-back; vLLM's slot mapping).
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
  at::Tensor keys, values;  // [B, capacity, H_kv, D]
  int64_t length = 0;       // positions filled (for slots: the longest slot's)
  int64_t reserve = 0;      // positions to allocate at the first append (0: grow as needed)

  std::vector<at::Tensor*> tensors() override { return {&keys, &values}; }
  std::unique_ptr<LayerState> empty_like() const override { return std::make_unique<KvLayerCache>(); }
  // The rows' first `tokens` keys and values (nothing when tokens is 0).
  std::unique_ptr<LayerState> gather(const at::Tensor& rows, int64_t tokens) const override {
    auto part = std::make_unique<KvLayerCache>();
    part->reserve = reserve;
    if (tokens > 0) {
      const at::Tensor on_device = rows.to(keys.device());
      part->keys = keys.narrow(1, 0, tokens).index_select(0, on_device);
      part->values = values.narrow(1, 0, tokens).index_select(0, on_device);
      part->length = tokens;
    }
    return part;
  }
  // Copies the part's filled positions into its rows, growing the capacity to the part's.
  void scatter(LayerState& state, const at::Tensor& rows) override {
    const auto& part = static_cast<const KvLayerCache&>(state);
    if (part.length == 0) return;
    if (!keys.defined()) allocate(slot_count, part.keys.size(1), part.keys.size(2), part.keys.size(3), part.keys.options());
    grow_to(part.keys.size(1));
    const at::Tensor on_device = rows.to(keys.device());
    keys.narrow(1, 0, part.length).index_copy_(0, on_device, part.keys.narrow(1, 0, part.length));
    values.narrow(1, 0, part.length).index_copy_(0, on_device, part.values.narrow(1, 0, part.length));
    length = std::max(length, part.length);
  }
  // A row's positions past its sequence's length are never read: nothing to clear.
  void reset_rows(const at::Tensor&) override {}
  bool rows_share_a_position() const override { return true; }
  void expect_tokens(int64_t tokens) override { reserve = tokens; }
  std::unique_ptr<LayerState> rows_view(std::shared_ptr<const SlotRows> rows) override;
  bool continues_rows_in_place() const override { return true; }
  // Grows first (copying the `length` filled positions), then counts the new ones as filled, so a
  // later growth keeps what replayed steps wrote there.
  void reserve_positions(int64_t positions) override {
    if (!keys.defined()) return;  // allocated by the first append, which counts its positions itself
    grow_to(positions);
    length = std::max(length, positions);
  }
  // Forgets the tokens (the next append starts at position 0, in a new allocation).
  void reset() override {
    keys = at::Tensor();
    values = at::Tensor();
    length = 0;
  }

  // Appends k, v [B, T, H_kv, D]; returns the filled keys and values [B, length, H_kv, D].
  std::pair<at::Tensor, at::Tensor> append(const at::Tensor& k, const at::Tensor& v) {
    const int64_t needed = length + k.size(1);
    if (!keys.defined()) allocate(k.size(0), std::max<int64_t>({needed, reserve, 16}), k.size(2), k.size(3), k.options());
    grow_to(needed);
    keys.narrow(1, length, k.size(1)).copy_(k);
    values.narrow(1, length, v.size(1)).copy_(v);
    length = needed;
    return {keys.narrow(1, 0, length), values.narrow(1, 0, length)};
  }

  // Room for `positions` positions in every row, keeping what is filled (capacity doubles).
  void grow_to(int64_t positions) {
    const int64_t old_capacity = keys.size(1);
    if (old_capacity >= positions) return;
    const int64_t capacity = std::max<int64_t>({positions, 2 * old_capacity, reserve});
    at::Tensor new_keys = at::empty({keys.size(0), capacity, keys.size(2), keys.size(3)}, keys.options());
    at::Tensor new_values = at::empty({values.size(0), capacity, values.size(2), values.size(3)}, values.options());
    if (length > 0) {
      new_keys.narrow(1, 0, length).copy_(keys.narrow(1, 0, length));
      new_values.narrow(1, 0, length).copy_(values.narrow(1, 0, length));
    }
    keys = new_keys;
    values = new_values;
  }
  void allocate(int64_t rows, int64_t capacity, int64_t heads, int64_t dim, const at::TensorOptions& options) {
    keys = at::empty({rows, capacity, heads, dim}, options);
    values = at::empty({rows, capacity, heads, dim}, options);
    length = 0;
  }
};

// Rows of a KvLayerCache continued in place (rows_view): the attention appends each row's new
// keys after its slot's own positions in `cache` and reads them there, so a running batch of
// different lengths steps in one forward.
struct KvRows : RowsView {
  KvLayerCache* cache = nullptr;        // the slots' cache (not owned; outlives the forward)

  // Room in the cache for every row's `new_tokens` more positions; allocates the cache (all its
  // slots) at the first call, with the heads, dim and options of k or v [R, T, H_kv, D].
  void make_room(int64_t new_tokens, const at::Tensor& k) {
    const int64_t needed = slots->max_tokens() + new_tokens;
    if (!cache->keys.defined()) {
      cache->allocate(cache->slot_count, std::max<int64_t>({needed, cache->reserve, 16}), k.size(2), k.size(3),
                      k.options());
    }
    cache->grow_to(needed);
    cache->length = std::max(cache->length, needed);
  }
};

inline std::unique_ptr<LayerState> KvLayerCache::rows_view(std::shared_ptr<const SlotRows> rows) {
  auto view = std::make_unique<KvRows>();
  view->cache = this;
  view->slots = std::move(rows);
  return view;
}

}  // namespace lintime::state
