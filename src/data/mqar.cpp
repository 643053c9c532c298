// MQAR generator, dataset and training order (see mqar.h and docs/mqar.md §1).
#include "data/mqar.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>
#include <unordered_set>

namespace lintime::data {
namespace {

// Tags separate the random streams derived from one user seed.
constexpr uint64_t kEpochOrderTag = 0x6d71617220656f72ULL;
constexpr uint64_t kExamplePermutationTag = 0x6d71617220706572ULL;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Injective in b for a fixed a (splitmix64 is a bijection).
uint64_t mix(uint64_t a, uint64_t b) { return splitmix64(splitmix64(a) ^ b); }

// Uniform integer in [0, n), n ≥ 1, without modulo bias; portable (std::uniform_int_distribution
// is implementation-defined).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t threshold = (0 - n) % n;  // 2^64 mod n
  while (true) {
    const uint64_t r = rng();
    if (r >= threshold) return r % n;
  }
}

// Uniform real in (0, 1] with 53 random bits.
double uniform_open_closed(std::mt19937_64& rng) {
  return static_cast<double>((rng() >> 11) + 1) * 0x1.0p-53;
}

// `count` distinct integers of [low, high), in the order drawn (uniformly random order).
// Rejection stays cheap: validation (4N ≤ L < V) keeps count ≤ high − low and, for the
// usual V ≫ L, far below it.
void distinct_tokens(std::mt19937_64& rng, int64_t low, int64_t high, int64_t count,
                     std::vector<int64_t>& out) {
  out.clear();
  std::unordered_set<int64_t> seen;
  seen.reserve(static_cast<size_t>(2 * count));
  const auto range = static_cast<uint64_t>(high - low);
  while (static_cast<int64_t>(out.size()) < count) {
    const int64_t token = low + static_cast<int64_t>(uniform_below(rng, range));
    if (seen.insert(token).second) out.push_back(token);
  }
}

// `count` distinct gaps of [0, slots) drawn one after another without replacement with
// probability ∝ (g + 1)^(power_a − 1), in the order drawn. Uses Efraimidis–Spirakis keys
// log(u)/w: the order of decreasing keys has the law of successive weighted draws.
void weighted_gaps(std::mt19937_64& rng, int64_t slots, int64_t count, double power_a,
                   std::vector<int64_t>& out) {
  std::vector<std::pair<double, int64_t>> keyed(static_cast<size_t>(slots));
  for (int64_t g = 0; g < slots; ++g) {
    const double weight = std::pow(static_cast<double>(g + 1), power_a - 1.0);
    keyed[g] = {std::log(uniform_open_closed(rng)) / weight, g};
  }
  std::partial_sort(keyed.begin(), keyed.begin() + count, keyed.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : a.second < b.second;
                    });
  out.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) out[i] = keyed[i].second;
}

// A keyed pseudo-random permutation of [0, n) evaluated per index: a 4-round Feistel network
// on the smallest even number of bits covering n, with cycle walking back into [0, n).
int64_t permute_index(int64_t index, int64_t n, uint64_t key) {
  if (n <= 1) return index;
  int bits = 1;
  while ((int64_t{1} << bits) < n) ++bits;
  const int half = (bits + 1) / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  uint64_t x = static_cast<uint64_t>(index);
  do {
    uint64_t left = x >> half, right = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t next = left ^ (mix(key + round, right) & mask);
      left = right;
      right = next;
    }
    x = (left << half) | right;
  } while (x >= static_cast<uint64_t>(n));
  return static_cast<int64_t>(x);
}

}  // namespace

void validate(const MqarSegmentConfig& c, const std::string& what) {
  // Named by the config's keys (seq_len, kv_pairs, examples), not the fields'.
  LINTIME_CHECK(c.input_seq_len >= 2 && c.input_seq_len % 2 == 0 && c.input_seq_len <= (int64_t{1} << 24), what,
                ": seq_len must be even and in [2, 16777216], got ", c.input_seq_len);
  LINTIME_CHECK(c.vocab_size > c.input_seq_len, what, ": vocab_size must be > seq_len = ",
                c.input_seq_len, ", got ", c.vocab_size);
  LINTIME_CHECK(c.num_kv_pairs >= 1, what, ": kv_pairs must be >= 1, got ", c.num_kv_pairs);
  LINTIME_CHECK(4 * c.num_kv_pairs <= c.input_seq_len, what,
                ": kv_pairs must satisfy 4 * kv_pairs <= seq_len = ", c.input_seq_len,
                ", got ", c.num_kv_pairs);
  LINTIME_CHECK(c.num_examples >= 1 && c.num_examples <= (int64_t{1} << 30), what,
                ": examples must be in [1, 2^30], got ", c.num_examples);
  LINTIME_CHECK(std::isfinite(c.power_a) && c.power_a > 0.0, what,
                ": power_a must be finite and > 0, got ", c.power_a);
}

std::string describe(const MqarSegmentConfig& c) {
  std::ostringstream out;
  out << "L=" << c.input_seq_len << " N=" << c.num_kv_pairs << " V=" << c.vocab_size
      << " n=" << c.num_examples;
  return out.str();
}

void generate_mqar_example(const MqarSegmentConfig& c, uint64_t seed, int64_t global_index,
                           int64_t* inputs, int64_t* labels) {
  const int64_t L = c.input_seq_len, N = c.num_kv_pairs, V = c.vocab_size;
  const int64_t context = 2 * N;
  std::mt19937_64 rng(mix(seed, static_cast<uint64_t>(global_index)));
  std::vector<int64_t> keys, values, gaps;
  distinct_tokens(rng, 1, V / 2, N, keys);
  distinct_tokens(rng, V / 2, V, N, values);
  weighted_gaps(rng, (L - context) / 2, N, c.power_a, gaps);

  std::fill(inputs, inputs + L, 0);
  std::fill(labels, labels + L, kMqarIgnoreIndex);
  for (int64_t i = 0; i < N; ++i) {
    inputs[2 * i] = keys[i];
    inputs[2 * i + 1] = values[i];
    // As in zoology, the query region holds the keys only: the value is the label of the
    // query key's position, never an input token.
    const int64_t position = context + 2 * gaps[i];
    inputs[position] = keys[i];
    labels[position] = values[i];
  }
  if (c.random_non_queries) {
    for (int64_t p = context; p < L; ++p) {
      if (inputs[p] == 0) inputs[p] = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(V)));
    }
  }
}

MqarDataset::MqarDataset(std::vector<MqarSegmentConfig> segments, uint64_t seed, int64_t batch_size)
    : segments_(std::move(segments)), seed_(seed), batch_size_(batch_size) {
  LINTIME_CHECK(!segments_.empty(), "mqar dataset: segments must not be empty");
  LINTIME_CHECK(batch_size >= 1, "mqar dataset: batch_size must be >= 1, got ", batch_size);
  int64_t offset = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    validate(segments_[i], "mqar segment " + std::to_string(i));
    offsets_.push_back(offset);
    offset += segments_[i].num_examples;
  }
}

const MqarSegmentConfig& MqarDataset::segment(int64_t index) const {
  LINTIME_CHECK(index >= 0 && index < num_segments(), "mqar dataset: segment must be in [0, ",
                num_segments(), "), got ", index);
  return segments_[index];
}

int64_t MqarDataset::num_examples() const {
  return offsets_.back() + segments_.back().num_examples;
}

int64_t MqarDataset::num_batches(int64_t segment_index) const {
  return (segment(segment_index).num_examples + batch_size_ - 1) / batch_size_;
}

int64_t MqarDataset::batches_per_epoch() const {
  int64_t total = 0;
  for (int64_t s = 0; s < num_segments(); ++s) total += num_batches(s);
  return total;
}

MqarBatch MqarDataset::gather(int64_t segment_index, std::span<const int64_t> indices) const {
  const MqarSegmentConfig& c = segment(segment_index);
  for (int64_t index : indices) {
    LINTIME_CHECK(index >= 0 && index < c.num_examples, "mqar dataset: example index must be in [0, ",
                  c.num_examples, ") for segment ", segment_index, ", got ", index);
  }
  const auto rows = static_cast<int64_t>(indices.size());
  const int64_t L = c.input_seq_len;
  MqarBatch batch;
  batch.inputs = at::empty({rows, L}, at::kLong);
  batch.labels = at::empty({rows, L}, at::kLong);
  batch.segment = segment_index;
  batch.indices.assign(indices.begin(), indices.end());
  int64_t* inputs = batch.inputs.data_ptr<int64_t>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  const int64_t offset = offsets_[segment_index];
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      generate_mqar_example(c, seed_, offset + indices[row], inputs + row * L, labels + row * L);
    }
  });
  return batch;
}

MqarBatch MqarDataset::examples(int64_t segment_index, int64_t first, int64_t count) const {
  const int64_t total = segment(segment_index).num_examples;
  LINTIME_CHECK(first >= 0 && first < total, "mqar dataset: first example must be in [0, ", total,
                "), got ", first);
  LINTIME_CHECK(count >= 1, "mqar dataset: count must be >= 1, got ", count);
  std::vector<int64_t> indices(static_cast<size_t>(std::min(count, total - first)));
  std::iota(indices.begin(), indices.end(), first);
  return gather(segment_index, indices);
}

MqarBatch MqarDataset::batch(int64_t segment_index, int64_t batch_index) const {
  LINTIME_CHECK(batch_index >= 0 && batch_index < num_batches(segment_index),
                "mqar dataset: batch must be in [0, ", num_batches(segment_index), "), got ", batch_index);
  return examples(segment_index, batch_index * batch_size_, batch_size_);
}

std::vector<MqarBatchRef> MqarDataset::epoch_order(int64_t epoch) const {
  LINTIME_CHECK(epoch >= 0, "mqar dataset: epoch must be >= 0, got ", epoch);
  std::vector<MqarBatchRef> order;
  order.reserve(static_cast<size_t>(batches_per_epoch()));
  for (int64_t s = 0; s < num_segments(); ++s) {
    for (int64_t b = 0; b < num_batches(s); ++b) order.push_back({s, b});
  }
  std::mt19937_64 rng(mix(seed_ ^ kEpochOrderTag, static_cast<uint64_t>(epoch)));
  for (size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[uniform_below(rng, i)]);
  }
  return order;
}

MqarBatch MqarDataset::training_batch(int64_t epoch, const MqarBatchRef& ref, bool shuffle_examples) const {
  if (!shuffle_examples) return batch(ref.segment, ref.batch);
  LINTIME_CHECK(ref.batch >= 0 && ref.batch < num_batches(ref.segment), "mqar dataset: batch must be in [0, ",
                num_batches(ref.segment), "), got ", ref.batch);
  const int64_t total = segments_[ref.segment].num_examples;
  const uint64_t key = mix(mix(seed_ ^ kExamplePermutationTag, static_cast<uint64_t>(epoch)),
                           static_cast<uint64_t>(ref.segment));
  const int64_t first = ref.batch * batch_size_;
  const int64_t count = std::min(batch_size_, total - first);
  std::vector<int64_t> indices(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) indices[i] = permute_index(first + i, total, key);
  return gather(ref.segment, indices);
}

MqarBatch MqarDataset::training_batch_at_step(int64_t step, bool shuffle_examples) const {
  LINTIME_CHECK(step >= 0, "mqar dataset: step must be >= 0, got ", step);
  const int64_t per_epoch = batches_per_epoch();
  const int64_t epoch = step / per_epoch;
  return training_batch(epoch, epoch_order(epoch)[step % per_epoch], shuffle_examples);
}

std::vector<MqarSegmentConfig> gsa_paper_train_segments(int64_t num_examples) {
  return {{8192, 512, 64, num_examples, 0.01, false}};
}

std::vector<MqarSegmentConfig> gsa_paper_test_segments(int64_t num_examples) {
  return {{8192, 512, 64, num_examples, 0.01, false}};
}

std::vector<MqarSegmentConfig> based_train_segments() {
  return {{8192, 64, 4, 100000, 0.01, true},
          {8192, 128, 8, 20000, 0.01, true},
          {8192, 256, 16, 20000, 0.01, true},
          {8192, 256, 32, 20000, 0.01, true},
          {8192, 256, 64, 20000, 0.01, true}};
}

std::vector<MqarSegmentConfig> based_test_segments() {
  return {{8192, 64, 4, 1000, 0.01, true},    {8192, 64, 8, 1000, 0.01, true},
          {8192, 64, 16, 1000, 0.01, true},   {8192, 128, 32, 1000, 0.01, true},
          {8192, 256, 64, 1000, 0.01, true},  {8192, 512, 128, 1000, 0.01, true},
          {8192, 1024, 256, 1000, 0.01, true}};
}

}  // namespace lintime::data
