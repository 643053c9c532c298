// MQAR (multi-query associative recall), the synthetic in-context recall task of zoology
// (docs/mqar.md §1). Each example is a pure function of (seed, global example index): an
// std::mt19937_64 seeded with splitmix64 of both, so any example can be generated alone, in
// any order, on any machine (lintime draws integers and reals with its own portable code,
// not the implementation-defined std:: distributions).
//
// Layout of one example (V = vocab, L = input_seq_len, N = num_kv_pairs):
//   inputs  [L]: k1 v1 … kN vN | query region of (L − 2N)/2 two-token slots, key i in the slot
//                at gap g_i (position 2N + 2 g_i), 0 elsewhere — the value slot after a query
//                key stays 0 as in zoology (random_non_queries: every such 0 becomes a uniform
//                token of [0, V))
//   labels  [L]: v_i at position 2N + 2 g_i (the query key's own position), −100 elsewhere
// keys ∈ [1, V/2), values ∈ [V/2, V), gaps drawn without replacement ∝ (g + 1)^(power_a − 1).
//
// A dataset is a list of segments of mixed (L, N) (the BASED protocol); batches never mix
// segments, so no padding is needed. Global example index = examples of earlier segments +
// index inside the segment. Train and test sets must use different seeds.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lintime::data {

inline constexpr int64_t kMqarIgnoreIndex = -100;

struct MqarSegmentConfig {
  int64_t vocab_size = 8192;
  int64_t input_seq_len = 512;
  int64_t num_kv_pairs = 64;
  int64_t num_examples = 1;
  double power_a = 0.01;
  bool random_non_queries = false;
};

// Throws lintime::Error naming the first violated constraint: L ≥ 2 and even, V > L, N ≥ 1,
// 4N ≤ L, num_examples ≥ 1, power_a finite and > 0. `what` prefixes the message
// (e.g. "train segment 2").
void validate(const MqarSegmentConfig& config, const std::string& what = "mqar segment");

// "L=512 N=64 V=8192 n=3000" (for logs and per-segment reports).
std::string describe(const MqarSegmentConfig& config);

// One example written into caller-provided rows of length L (no validation: call validate).
void generate_mqar_example(const MqarSegmentConfig& config, uint64_t seed, int64_t global_index,
                           int64_t* inputs, int64_t* labels);

struct MqarBatch {
  at::Tensor inputs;             // [B, L] int64
  at::Tensor labels;             // [B, L] int64, kMqarIgnoreIndex where not scored
  int64_t segment = 0;           // index of the segment in the dataset
  std::vector<int64_t> indices;  // example indices inside the segment, one per row
};

// One (segment, batch) step of a training epoch.
struct MqarBatchRef {
  int64_t segment = 0;
  int64_t batch = 0;
  bool operator==(const MqarBatchRef&) const = default;
};

class MqarDataset {
 public:
  // Validates every segment; batch_size ≥ 1. The last batch of a segment may be smaller.
  MqarDataset(std::vector<MqarSegmentConfig> segments, uint64_t seed, int64_t batch_size);

  const std::vector<MqarSegmentConfig>& segments() const { return segments_; }
  const MqarSegmentConfig& segment(int64_t index) const;
  int64_t num_segments() const { return static_cast<int64_t>(segments_.size()); }
  uint64_t seed() const { return seed_; }
  int64_t batch_size() const { return batch_size_; }
  int64_t num_examples() const;                  // over all segments
  int64_t num_batches(int64_t segment) const;    // ceil(num_examples / batch_size)
  int64_t batches_per_epoch() const;             // over all segments

  // Examples `indices` of a segment, rows in the given order.
  MqarBatch gather(int64_t segment, std::span<const int64_t> indices) const;
  // Examples [first, first + count) of a segment (evaluation; count clipped at the end).
  MqarBatch examples(int64_t segment, int64_t first, int64_t count) const;
  // Batch `batch` of a segment in natural order: examples [batch·B, (batch+1)·B).
  MqarBatch batch(int64_t segment, int64_t batch) const;

  // Training order: every (segment, batch) of the dataset exactly once, shuffled by
  // (seed, epoch). With shuffle_examples, the examples of batch b of a segment in epoch e are
  // positions [b·B, (b+1)·B) of a permutation of the segment keyed by (seed, epoch, segment),
  // computed per index (no stored permutation); without, they are the natural batch.
  std::vector<MqarBatchRef> epoch_order(int64_t epoch) const;
  MqarBatch training_batch(int64_t epoch, const MqarBatchRef& ref, bool shuffle_examples = true) const;
  // The batch a trainer sees at global step `step` (epoch = step / batches_per_epoch()):
  // resuming at any step gives the same batches as an uninterrupted run.
  MqarBatch training_batch_at_step(int64_t step, bool shuffle_examples = true) const;

 private:
  std::vector<MqarSegmentConfig> segments_;
  std::vector<int64_t> offsets_;  // global index of each segment's first example
  uint64_t seed_;
  int64_t batch_size_;
};

// Segment lists of the standard settings (docs/mqar.md §3).
// GSA paper Fig. 3a: L 512, N 64, V 8192; one train and one test segment.
std::vector<MqarSegmentConfig> gsa_paper_train_segments(int64_t num_examples = 100000);
std::vector<MqarSegmentConfig> gsa_paper_test_segments(int64_t num_examples = 3000);
// BASED paper Fig. 2: five train segments and seven test segments (length extrapolation to
// 1024), V 8192, random_non_queries true.
std::vector<MqarSegmentConfig> based_train_segments();
std::vector<MqarSegmentConfig> based_test_segments();

}  // namespace lintime::data
