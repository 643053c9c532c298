// Batched decode steps of a running batch (a server's) through fixed-size buckets, each replayed
// as a CUDA graph (vLLM's decode graphs for batch-size buckets). Decoder::forward_slots gathers
// the slots' states into fresh tensors, runs the step and writes them back: every step
// allocates and launches its ~1,000 kernels one by one from the host. Here each bucket size
// (1, 2, 4, ... up to the cache's sequences) has staging states at fixed addresses; a step over
// B slots takes the smallest bucket of at least B rows, fills the others with the cache's
// withheld padding slot, and runs gather -> model step -> write-back as one unit: recorded once
// per bucket and replayed on a GPU (DecodeGraph), run as is on a CPU (the same arithmetic, which
// is what the CPU tests check).
//
// Only for models whose steps are replayable (Decoder::slot_steps_are_replayable: states updated
// in place, nothing read on the host). Layers whose states continue rows in place are not staged
// (LayerState::continues_rows_in_place): GSA's recurrent states are stepped where they lie
// (state::GsaRows, ops::gsa_step_rows_), and a KV cache (the Transformer++) appends each row at
// its own position (state::KvRows over a SlotRows at fixed addresses, keys bounded by the cache's
// capacity; room for the step is reserved on the host before it runs). The others (BASED, GLA,
// narrowed states) are gathered into the staging and written back.
// The recordings point at the cache's tensors; when one of them is replaced (allocated at a first
// prefill, or a KV cache grown), the staging and recordings are made anew.
#pragma once

#include "infer/decode_graph.h"
#include "models/decoder.h"
#include "state/cache.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace lintime::infer {

class SlotSteps {
 public:
  // `cache`: the running batch's (it must outlive this), `padding_slot` one of its slots that is
  // withheld from sequences (Cache::withhold); buckets hold up to `largest_bucket` rows.
  SlotSteps(models::Decoder& decoder, state::Cache& cache, int64_t padding_slot, int64_t largest_bucket);
  ~SlotSteps();
  SlotSteps(const SlotSteps&) = delete;
  SlotSteps& operator=(const SlotSteps&) = delete;

  // Row b: token tokens[b] continues the sequence in slots[b] (distinct admitted slots, at most
  // the largest bucket). Returns the logits [B, vocab] (fp32; fp64 for an fp64 model) and
  // advances each slot's token count by one, as forward_slots does.
  at::Tensor step(const std::vector<int64_t>& tokens, const std::vector<int64_t>& slots);

  // The rows of the bucket that B rows run in.
  int64_t bucket_rows(int64_t rows) const;
  const std::vector<int64_t>& bucket_sizes() const { return sizes_; }
  // Buckets recorded as CUDA graphs so far (0 on a CPU).
  int64_t recorded_buckets() const;

 private:
  struct Bucket;
  // Makes the staging states for the cache's current tensors (again, after they changed).
  void stage();
  std::vector<const void*> cache_addresses();

  models::Decoder& decoder_;
  state::Cache& cache_;
  int64_t padding_slot_;
  std::vector<int64_t> sizes_;
  std::vector<std::unique_ptr<Bucket>> buckets_;  // one per size, made by stage()
  std::vector<const void*> staged_for_;           // the cache tensors' addresses when staged
};

}  // namespace lintime::infer
