// LM rows from a token shard split: per-epoch window permutations and document-boundary packing.
// See lm_batches.h for the contract.
#include "data/lm_batches.h"

#include "core/error.h"

#include <ATen/ATen.h>

#include <iterator>
#include <limits>
#include <numeric>

namespace lintime::data {

namespace {

uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Keep the permutations of this many epochs (a batch can straddle two epochs).
constexpr size_t kCachedEpochs = 2;

}  // namespace

std::vector<int64_t> window_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  LINTIME_CHECK(n >= 0, "window_permutation: n must be >= 0, got ", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  constexpr uint64_t golden = 0x9E3779B97F4A7C15ull;
  uint64_t state = splitmix64_mix(seed + golden) ^ splitmix64_mix(static_cast<uint64_t>(epoch) * golden + 0x5851F42D4C957F2Dull);
  for (int64_t j = n - 1; j >= 1; --j) {
    state += golden;
    const uint64_t draw = splitmix64_mix(state);
    // Lemire's multiply-high maps a 64-bit draw onto [0, j] (bias below 2^-40 for any corpus).
    const auto k = static_cast<int64_t>((static_cast<unsigned __int128>(draw) * static_cast<uint64_t>(j + 1)) >> 64);
    std::swap(order[j], order[k]);
  }
  return order;
}

LmRows::LmRows(std::shared_ptr<const io::TokenShardSet> split, LmRowsOptions options)
    : split_(std::move(split)), options_(options) {
  LINTIME_CHECK(split_, "LmRows: no token split given");
  LINTIME_CHECK(options_.seq_len >= 1, "LM rows: seq_len must be >= 1, got ", options_.seq_len);
  windows_ = (split_->tokens() - 1) / options_.seq_len;
  LINTIME_CHECK(windows_ >= 1, "split '", split_->split(), "' of token shards '", split_->dir(), "' holds ",
                split_->tokens(), " tokens, fewer than seq_len + 1 = ", options_.seq_len + 1, " for one row");
}

std::shared_ptr<const std::vector<int64_t>> LmRows::permutation(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  auto found = permutations_.find(epoch);
  if (found != permutations_.end()) return found->second;
  auto order = std::make_shared<const std::vector<int64_t>>(window_permutation(windows_, options_.seed, epoch));
  permutations_.emplace(epoch, order);
  while (permutations_.size() > kCachedEpochs) {
    // Drop the epoch farthest from the one asked for.
    auto far = permutations_.begin();
    if (std::prev(permutations_.end())->first - epoch > epoch - far->first) far = std::prev(permutations_.end());
    permutations_.erase(far);
  }
  return order;
}

int64_t LmRows::window_of_row(int64_t row) const {
  LINTIME_CHECK(row >= 0, "LM rows: row index must be >= 0, got ", row);
  const int64_t epoch = row / windows_, index = row % windows_;
  return options_.shuffle ? (*permutation(epoch))[index] : index;
}

LmBatch LmRows::rows(int64_t first, int64_t count) const {
  const int64_t seq_len = options_.seq_len;
  LINTIME_CHECK(first >= 0 && count >= 1, "LM rows: expected first >= 0 and count >= 1, got first ", first,
                " and count ", count);
  LINTIME_CHECK(count * seq_len <= std::numeric_limits<int32_t>::max(), "LM rows: ", count, " rows of ", seq_len,
                " tokens exceed the int32 range of cu_seqlens");
  LmBatch batch;
  batch.input_ids = at::empty({count, seq_len}, at::kLong);  // [rows, T]
  batch.labels = at::empty({count, seq_len}, at::kLong);     // [rows, T]
  int64_t* inputs = batch.input_ids.data_ptr<int64_t>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  std::vector<int64_t> window(static_cast<size_t>(seq_len + 1));
  std::vector<int64_t> starts;
  std::vector<int32_t> cu_seqlens;
  int64_t masked = 0;
  for (int64_t r = 0; r < count; ++r) {
    const int64_t begin = window_of_row(first + r) * seq_len;
    split_->read(begin, seq_len + 1, window.data());
    int64_t* row_inputs = inputs + r * seq_len;
    int64_t* row_labels = labels + r * seq_len;
    std::copy(window.begin(), window.end() - 1, row_inputs);
    std::copy(window.begin() + 1, window.end(), row_labels);
    if (!options_.document_boundaries) continue;
    cu_seqlens.push_back(static_cast<int32_t>(r * seq_len));
    starts.clear();
    split_->document_starts(begin + 1, begin + seq_len + 1, starts);  // inputs 1..T-1 and the label at T
    for (int64_t position : starts) {
      const int64_t i = position - begin;  // in [1, T]
      row_labels[i - 1] = kIgnoreLabel;
      ++masked;
      if (i < seq_len) cu_seqlens.push_back(static_cast<int32_t>(r * seq_len + i));
    }
  }
  batch.target_tokens = count * seq_len - masked;
  if (options_.document_boundaries) {
    cu_seqlens.push_back(static_cast<int32_t>(count * seq_len));
    batch.cu_seqlens = at::from_blob(cu_seqlens.data(), {static_cast<int64_t>(cu_seqlens.size())}, at::kInt).clone();  // [N + 1]
  }
  return batch;
}

}  // namespace lintime::data
