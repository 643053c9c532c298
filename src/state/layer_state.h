// One layer's decoding state, whatever its mixer: recurrent states, a KV cache, a ring buffer,
// a convolution's history. Every tensor a state holds has the sequence as its first dimension,
// so a cache can zero, gather and scatter the rows of some sequences without knowing the mixer
// (state/cache.h). Layers own weights, states own what decoding keeps (style.md habit 5).
// Header-only, ATen only, so that layers can use it without linking anything above them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

namespace lintime::state {

// The slots one forward continues in place (LayerState::rows_view), made once per forward and
// shared by every layer's view: row r of the forward is slot rows[r], which holds tokens[r]
// positions before it.
struct SlotRows {
  at::Tensor rows;               // [R] int64 on the model's device
  at::Tensor positions;          // [R] int64 on the model's device: tokens, for device-side indexing
  std::vector<int64_t> slots;    // [R] on the host: rows
  std::vector<int64_t> tokens;   // [R] on the host
  // For a step recorded once and replayed (infer::SlotSteps): the host's token counts are those
  // of the recording, so attention bounds its keys by the cache's capacity (reserved by the
  // caller before each replay), not by max_tokens(), and reads the counts from `positions`.
  bool keys_up_to_capacity = false;
  int64_t max_tokens() const {
    int64_t most = 0;
    for (int64_t t : tokens) most = t > most ? t : most;
    return most;
  }

  // Where `length` new tokens of every row go in caches of `capacity` positions per slot, and
  // FlashAttention's varlen operands for reading them there. Every layer's cache has the same
  // capacity, so these are built by the first layer of a forward and reused by the others.
  struct Placement {
    int64_t length = -1, capacity = -1;
    at::Tensor slot, position;                // [R, length] int64: cache[slot, position] gets token t of row r
    at::Tensor starts_q, starts_k, keys_used; // int32: [R + 1], [R + 1], [R]
  };
  const Placement& placement(int64_t length, int64_t capacity) const {
    if (placed.length == length && placed.capacity == capacity) return placed;
    const int64_t count = static_cast<int64_t>(tokens.size());
    const auto int32 = rows.options().dtype(at::kInt);
    placed.length = length;
    placed.capacity = capacity;
    placed.position = positions.unsqueeze(1) + at::arange(length, positions.options()).unsqueeze(0);
    placed.slot = rows.unsqueeze(1).expand({count, length});
    placed.starts_q = at::arange(0, (count + 1) * length, length, int32);
    placed.starts_k = at::cat({rows, rows.new_zeros({1})}).mul(capacity).to(at::kInt);
    placed.keys_used = (positions + length).to(at::kInt);
    return placed;
  }
  // After `rows` or `positions` changed in place (a replayed step's staging): build anew.
  void forget_placement() const { placed.length = -1; }

 private:
  mutable Placement placed;  // one forward is one thread: no lock
};

class LayerState {
 public:
  virtual ~LayerState() = default;
  // The slots (rows) a state allocated lazily gets when a part is first written back (set by
  // the cache that holds it).
  int64_t slot_count = 0;
  // Recurrent states kept narrower than they are computed in (serve --state-dtype bfloat16):
  // between calls they are stored in `recurrent_dtype`; a call reads them widened to
  // `compute_dtype` and stores its result rounded once (widen() before, narrow() after).
  std::optional<at::ScalarType> recurrent_dtype;
  at::ScalarType compute_dtype = at::kFloat;
  // The tensors recurrent_dtype applies to (not KV caches or convolution histories, which keep
  // the activations' dtype).
  virtual std::vector<at::Tensor*> recurrent_tensors() { return {}; }
  void widen() {
    if (!recurrent_dtype) return;
    for (at::Tensor* tensor : recurrent_tensors()) {
      if (tensor->defined()) *tensor = tensor->to(compute_dtype);
    }
  }
  void narrow() {
    if (!recurrent_dtype) return;
    for (at::Tensor* tensor : recurrent_tensors()) {
      if (tensor->defined()) *tensor = tensor->to(*recurrent_dtype);
    }
  }
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
  // A state of the same kind that holds nothing yet (gather fills it).
  virtual std::unique_ptr<LayerState> empty_like() const = 0;

  // The sequences of `rows` [R] (int64) as a state of their own (copies), each having consumed
  // `tokens` tokens (a state that keeps one position for all its rows needs it).
  virtual std::unique_ptr<LayerState> gather(const at::Tensor& rows, int64_t tokens) const {
    std::unique_ptr<LayerState> part = empty_like();
    part->recurrent_dtype = recurrent_dtype;
    part->compute_dtype = compute_dtype;
    auto sources = const_cast<LayerState*>(this)->tensors();
    auto targets = part->tensors();
    for (size_t i = 0; i < sources.size(); ++i) {
      if (sources[i]->defined()) *targets[i] = sources[i]->index_select(0, rows.to(sources[i]->device()));
    }
    return part;
  }
  // Writes `part` (gathered from the same rows, then continued) back into `rows`. A tensor the
  // state allocates at its first use (a prefill's) is allocated here for all slot_count rows.
  virtual void scatter(LayerState& part, const at::Tensor& rows) {
    auto targets = tensors();
    auto sources = part.tensors();
    for (size_t i = 0; i < targets.size(); ++i) {
      if (!sources[i]->defined()) continue;
      if (!targets[i]->defined()) {
        std::vector<int64_t> sizes = sources[i]->sizes().vec();
        sizes[0] = slot_count;
        *targets[i] = at::zeros(sizes, sources[i]->options());
      }
      targets[i]->index_copy_(0, rows.to(targets[i]->device()), *sources[i]);
    }
  }
  // The sequences of some slots continued in place, each at its own position (a server's running
  // batch of different lengths in one forward; nothing gathered or written back). Null where the state has no such view: forward_slots then gathers and scatters.
  virtual std::unique_ptr<LayerState> rows_view(std::shared_ptr<const SlotRows> /*rows*/) { return nullptr; }
  virtual bool continues_rows_in_place() const { return false; }
  // Room for `positions` positions in every row of a state continued in place, and those counted
  // as filled; done on the host before a recorded step that appends in place is replayed.
  virtual void reserve_positions(int64_t /*positions*/) {}
  // Forgets the sequences of `rows` (a new sequence starts there).
  virtual void reset_rows(const at::Tensor& rows) {
    for (at::Tensor* tensor : tensors()) {
      if (tensor->defined()) tensor->index_fill_(0, rows.to(tensor->device()), 0);
    }
  }
  // True when all rows of one forward must be at the same position (a KV cache appends at one
  // length); false when rows are independent whatever their positions (recurrent states).
  virtual bool rows_share_a_position() const { return false; }

  // Bytes allocated by the state's tensors (all sequences).
  int64_t allocated_bytes() const {
    int64_t total = 0;
    for (const at::Tensor* tensor : const_cast<LayerState*>(this)->tensors()) {
      if (tensor->defined()) total += tensor->numel() * static_cast<int64_t>(tensor->element_size());
    }
    return total;
  }
};

// A view of some slots of another state continued in place (LayerState::rows_view): it holds no
// tensors of its own, so there is nothing to gather, write back or reset; the mixer reads the
// slots' state through the view's own pointer (state::KvRows, state::GsaRows).
struct RowsView : LayerState {
  std::shared_ptr<const SlotRows> slots;

  std::vector<at::Tensor*> tensors() override { return {}; }
  std::unique_ptr<LayerState> empty_like() const override {
    throw std::logic_error("a view of a cache's rows has no empty copy");
  }
  std::unique_ptr<LayerState> gather(const at::Tensor&, int64_t) const override {
    throw std::logic_error("a view of a cache's rows is not gathered from");
  }
  void scatter(LayerState&, const at::Tensor&) override {}  // already written in place
  void reset_rows(const at::Tensor&) override {}
  void reset() override {}
};

}  // namespace lintime::state
