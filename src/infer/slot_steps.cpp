#include "infer/slot_steps.h"

#include "core/error.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace lintime::infer {

struct SlotSteps::Bucket {
  int64_t rows = 0;
  // Per layer: views of the first `rows` rows of the shared staging tensors, or for a layer that
  // continues rows in place, a view of the cache itself over `in_place`.
  state::Cache staging;
  at::Tensor slot_index;  // [rows] int64 on the model's device: the slot each row continues
  at::Tensor positions;   // [rows] int64 on the model's device: tokens each row's slot holds
  std::shared_ptr<state::SlotRows> in_place;  // rows = slot_index, positions = positions
  DecodeGraph graph;
};

SlotSteps::SlotSteps(models::Decoder& decoder, state::Cache& cache, int64_t padding_slot, int64_t largest_bucket)
    : decoder_(decoder), cache_(cache), padding_slot_(padding_slot) {
  LINTIME_CHECK(decoder.slot_steps_are_replayable(), "slot steps: this model's decode steps cannot be replayed ",
                "(a layer reads its position on the host or keeps a narrowed state)");
  LINTIME_CHECK(cache.withheld(padding_slot), "slot steps: the padding slot ", padding_slot,
                " must be withheld from sequences (Cache::withhold)");
  LINTIME_CHECK(largest_bucket >= 1 && largest_bucket < cache.batch_size(), "slot steps: the largest bucket must lie in [1, ",
                cache.batch_size() - 1, "] (the cache's slots but the padding one), got ", largest_bucket);
  for (int64_t rows = 1; rows < largest_bucket; rows *= 2) sizes_.push_back(rows);
  sizes_.push_back(largest_bucket);
}

SlotSteps::~SlotSteps() = default;

int64_t SlotSteps::bucket_rows(int64_t rows) const {
  LINTIME_CHECK(rows >= 1 && rows <= sizes_.back(), "slot steps: a step over ", rows, " rows, expected 1 to ",
                sizes_.back());
  return *std::lower_bound(sizes_.begin(), sizes_.end(), rows);
}

int64_t SlotSteps::recorded_buckets() const {
  int64_t recorded = 0;
  for (const auto& bucket : buckets_) recorded += bucket->graph.recorded() ? 1 : 0;
  return recorded;
}

std::vector<const void*> SlotSteps::cache_addresses() {
  std::vector<const void*> addresses;
  for (int64_t i = 0; i < cache_.num_layers(); ++i) {
    for (at::Tensor* tensor : cache_.layer(i).tensors()) {
      addresses.push_back(tensor->defined() ? tensor->data_ptr() : nullptr);
    }
  }
  return addresses;
}

void SlotSteps::stage() {
  buckets_.clear();
  const int64_t largest = sizes_.back();
  // One staging tensor per cache tensor, `largest` rows; every bucket's states are views of its
  // first rows, so the buckets together take one largest batch of state memory.
  std::vector<std::vector<at::Tensor>> shared(static_cast<size_t>(cache_.num_layers()));
  for (int64_t i = 0; i < cache_.num_layers(); ++i) {
    if (cache_.layer(i).continues_rows_in_place()) continue;  // read and written in the cache
    for (at::Tensor* tensor : cache_.layer(i).tensors()) {
      if (!tensor->defined()) {
        shared[static_cast<size_t>(i)].emplace_back();
        continue;
      }
      std::vector<int64_t> sizes = tensor->sizes().vec();
      sizes[0] = largest;
      shared[static_cast<size_t>(i)].push_back(at::zeros(sizes, tensor->options()));
    }
  }
  const c10::Device device = decoder_.head_weight().device();
  const auto index_options = at::TensorOptions().dtype(at::kLong).device(device);
  for (int64_t rows : sizes_) {
    auto bucket = std::make_unique<Bucket>();
    bucket->rows = rows;
    bucket->slot_index = at::full({rows}, padding_slot_, index_options);
    bucket->positions = at::zeros({rows}, index_options);
    bucket->in_place = std::make_shared<state::SlotRows>();
    bucket->in_place->rows = bucket->slot_index;
    bucket->in_place->positions = bucket->positions;
    bucket->in_place->keys_up_to_capacity = true;
    std::vector<std::unique_ptr<state::LayerState>> layers;
    for (int64_t i = 0; i < cache_.num_layers(); ++i) {
      state::LayerState& source = cache_.layer(i);
      if (source.continues_rows_in_place()) {
        layers.push_back(source.rows_view(bucket->in_place));
        continue;
      }
      std::unique_ptr<state::LayerState> layer = source.empty_like();
      layer->recurrent_dtype = source.recurrent_dtype;
      layer->compute_dtype = source.compute_dtype;
      auto targets = layer->tensors();
      for (size_t j = 0; j < targets.size(); ++j) {
        const at::Tensor& staging = shared[static_cast<size_t>(i)][j];
        if (staging.defined()) *targets[j] = staging.narrow(0, 0, rows);
      }
      layers.push_back(std::move(layer));
    }
    bucket->staging = state::Cache(std::move(layers), rows);
    buckets_.push_back(std::move(bucket));
  }
  staged_for_ = cache_addresses();
}

at::Tensor SlotSteps::step(const std::vector<int64_t>& tokens, const std::vector<int64_t>& slots) {
  LINTIME_CHECK(!slots.empty() && tokens.size() == slots.size(), "slot steps: one token per slot, got ", tokens.size(),
                " tokens for ", slots.size(), " slots");
  const int64_t count = static_cast<int64_t>(slots.size());
  const int64_t rows = bucket_rows(count);
  std::vector<bool> seen(static_cast<size_t>(cache_.batch_size()), false);
  for (int64_t slot : slots) {
    LINTIME_CHECK(slot >= 0 && slot < cache_.batch_size() && slot != padding_slot_ && !seen[static_cast<size_t>(slot)],
                  "slot steps: slots must be distinct admitted slots in [0, ", cache_.batch_size(), "), got ", slot);
    seen[static_cast<size_t>(slot)] = true;
  }
  // Padding rows continue the padding slot with token 0 at its position 0 (a KV cache's padding
  // row attends to that one key); what they write there is never read.
  std::vector<int64_t> padded_tokens(tokens), padded_slots(slots), positions;
  padded_tokens.resize(static_cast<size_t>(rows), 0);
  padded_slots.resize(static_cast<size_t>(rows), padding_slot_);
  int64_t longest = 0;
  for (int64_t slot : padded_slots) {
    positions.push_back(slot == padding_slot_ ? 0 : cache_.slot_tokens(slot));
    longest = std::max(longest, positions.back());
  }
  // Room for this step in caches appended in place (a growth replaces them: staged anew below).
  for (int64_t i = 0; i < cache_.num_layers(); ++i) {
    if (cache_.layer(i).continues_rows_in_place()) cache_.layer(i).reserve_positions(longest + 1);
  }
  if (buckets_.empty() || cache_addresses() != staged_for_) stage();
  Bucket& bucket = **std::find_if(buckets_.begin(), buckets_.end(), [&](const auto& b) { return b->rows == rows; });
  bucket.slot_index.copy_(at::tensor(padded_slots, at::kLong));
  bucket.positions.copy_(at::tensor(positions, at::kLong));
  bucket.in_place->slots = padded_slots;  // the host's copies, read where nothing is recorded
  bucket.in_place->tokens = positions;
  const at::Tensor token_tensor = at::tensor(padded_tokens, at::kLong).to(bucket.slot_index.device());

  const auto body = [this, &bucket](const at::Tensor& step_tokens) {
    bucket.in_place->forget_placement();  // built from this step's slots and positions (recorded too)
    // Into the staging's fixed buffers (LayerState::gather would allocate new ones each step).
    for (int64_t i = 0; i < cache_.num_layers(); ++i) {
      if (cache_.layer(i).continues_rows_in_place()) continue;
      auto sources = cache_.layer(i).tensors();
      auto targets = bucket.staging.layer(i).tensors();
      for (size_t j = 0; j < sources.size(); ++j) {
        if (sources[j]->defined()) at::index_select_out(*targets[j], *sources[j], 0, bucket.slot_index);
      }
    }
    at::Tensor logits = decoder_.forward(step_tokens.unsqueeze(1), &bucket.staging).select(1, 0);
    for (int64_t i = 0; i < cache_.num_layers(); ++i) {
      if (!cache_.layer(i).continues_rows_in_place()) cache_.layer(i).scatter(bucket.staging.layer(i), bucket.slot_index);
    }
    return logits;
  };
  const at::Tensor logits = bucket.graph.run(token_tensor, body);
  for (int64_t slot : slots) cache_.advance_slot(slot, 1);
  return logits.narrow(0, 0, count);
}

}  // namespace lintime::infer
