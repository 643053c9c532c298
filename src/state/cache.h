// The decoding state of a whole model: one LayerState per layer, each holding one row per slot,
// and the tokens each slot's sequence has consumed. Which mixer a layer has does not matter
// here; the layer's mixer made its state (models/mixer.h) and reads it back. Header-only.
//
// Two ways to use it. A batch decoded together (prefill, then steps) uses every slot at once
// (Decoder::forward with the cache). A running batch whose sequences join and leave (a server)
// admits a sequence into a free slot, runs forwards over the slots that have work
// (Decoder::forward_slots), and retires the slot when the sequence ends; the other slots' states
// are not touched (causal-conv1d's conv_state_indices, vLLM's slots).
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
      : layers_(std::move(layers)), batch_(batch), slot_tokens_(static_cast<size_t>(batch), 0),
        in_use_(static_cast<size_t>(batch), false), withheld_(static_cast<size_t>(batch), false) {
    for (auto& layer_state : layers_) layer_state->slot_count = batch;
  }

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  // Sequences (slots) the states hold rows for.
  int64_t batch_size() const { return batch_; }
  // Tokens consumed by the whole batch since the last reset (prefill + steps).
  int64_t seen_tokens() const { return seen_tokens_; }
  // After a forward over every slot.
  void advance(int64_t tokens) {
    seen_tokens_ += tokens;
    for (int64_t& slot : slot_tokens_) slot += tokens;
  }

  // Tokens the sequence in `slot` has consumed.
  int64_t slot_tokens(int64_t slot) const { return slot_tokens_.at(check_slot(slot)); }
  void advance_slot(int64_t slot, int64_t tokens) { slot_tokens_.at(check_slot(slot)) += tokens; }
  // True when every slot's sequence has consumed the same number of tokens.
  bool slots_aligned() const {
    for (int64_t tokens : slot_tokens_) {
      if (tokens != slot_tokens_.front()) return false;
    }
    return true;
  }

  // A free slot for a new sequence, its state forgotten; -1 when every slot is in use.
  int64_t admit() {
    for (int64_t slot = 0; slot < batch_; ++slot) {
      if (in_use_[static_cast<size_t>(slot)] || withheld_[static_cast<size_t>(slot)]) continue;
      const at::Tensor rows = at::full({1}, slot, at::kLong);
      for (auto& layer_state : layers_) layer_state->reset_rows(rows);
      in_use_[static_cast<size_t>(slot)] = true;
      slot_tokens_[static_cast<size_t>(slot)] = 0;
      return slot;
    }
    return -1;
  }
  // Frees `slot` (its sequence ended); the other slots are not touched.
  void retire(int64_t slot) { in_use_.at(check_slot(slot)) = false; }
  bool in_use(int64_t slot) const { return in_use_.at(check_slot(slot)); }
  // A slot no sequence is ever admitted to: a scratch row that padding rows of fixed-size
  // batched steps continue and write back (infer/slot_steps.h).
  void withhold(int64_t slot) { withheld_.at(check_slot(slot)) = true; }
  bool withheld(int64_t slot) const { return withheld_.at(check_slot(slot)); }

  LayerState& layer(int64_t index) {
    if (index < 0 || index >= num_layers()) {
      throw std::out_of_range("Cache: layer " + std::to_string(index) + " out of range [0, " +
                              std::to_string(num_layers()) + ")");
    }
    return *layers_[static_cast<size_t>(index)];
  }
  const LayerState& layer(int64_t index) const { return const_cast<Cache*>(this)->layer(index); }

  // Forgets every sequence (each layer's reset).
  void reset() {
    for (auto& layer_state : layers_) layer_state->reset();
    seen_tokens_ = 0;
    slot_tokens_.assign(slot_tokens_.size(), 0);
  }

  // Bytes allocated by every state tensor of every layer (all sequences).
  int64_t allocated_bytes() const {
    int64_t total = 0;
    for (const auto& layer_state : layers_) total += layer_state->allocated_bytes();
    return total;
  }

 private:
  size_t check_slot(int64_t slot) const {
    if (slot < 0 || slot >= batch_) {
      throw std::out_of_range("Cache: slot " + std::to_string(slot) + " out of range [0, " + std::to_string(batch_) + ")");
    }
    return static_cast<size_t>(slot);
  }

  std::vector<std::unique_ptr<LayerState>> layers_;
  int64_t batch_ = 0;
  int64_t seen_tokens_ = 0;
  std::vector<int64_t> slot_tokens_;
  std::vector<bool> in_use_;
  std::vector<bool> withheld_;
};

}  // namespace lintime::state
