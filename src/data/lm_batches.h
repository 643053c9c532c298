// Language-model rows from one split of a token shard directory, for the LM trainer. A split's
// token stream is cut into non-overlapping windows of seq_len + 1 tokens stepping by seq_len
// (window k reads tokens [k·T, k·T + T]); a row's inputs are the window's first T tokens and its
// labels the last T. Rows are a pure function of (seed, row index): global row i is window
// perm_e[i mod W] of epoch e = i / W, perm_e a Fisher-Yates permutation drawn from a splitmix64
// stream seeded by (seed, e), so a trainer that computes the row index from (step, micro-batch,
// rank) gets the same batch on every run and machine, and resuming needs only the step.
//
// With document boundaries a row is packed varlen style (fla): a segment starts at the row's
// first position and at every position whose input token begins a document; the label before
// every token that begins a document is -100 (it would predict a new document from the previous
// one's EOS), also at the row's last position; cu_seqlens lists the segment starts over the
// flattened [rows · T] tokens, then rows · T. Without boundaries rows are plain windows.
#pragma once

#include "io/token_shards.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace lintime::data {

struct LmRowsOptions {
  int64_t seq_len = 0;              // tokens per row (inputs); a row reads seq_len + 1 tokens
  uint64_t seed = 0;                // order of the windows, per epoch
  bool document_boundaries = true;  // pack documents with boundaries (cu_seqlens), else plain windows
  bool shuffle = true;              // false: windows in corpus order (validation)
};

struct LmBatch {
  at::Tensor input_ids;   // int64 [rows, seq_len], CPU
  at::Tensor labels;      // int64 [rows, seq_len], CPU; -100 where there is no target
  at::Tensor cu_seqlens;  // int32 [N + 1], CPU: segment starts over the flattened rows * seq_len tokens
                          // (every row start and every document start inside a row, then rows*seq_len);
                          // undefined when document_boundaries is false
  int64_t target_tokens = 0;  // labels != -100
};

inline constexpr int64_t kIgnoreLabel = -100;

class LmRows {
 public:
  // Throws lintime::Error when seq_len < 1 or the split holds fewer than seq_len + 1 tokens.
  LmRows(std::shared_ptr<const io::TokenShardSet> split, LmRowsOptions options);

  // Rows in one pass (epoch): (tokens - 1) / seq_len windows.
  int64_t windows() const { return windows_; }
  const LmRowsOptions& options() const { return options_; }
  const io::TokenShardSet& split() const { return *split_; }

  // The window (index into the corpus-order windows) that global row `row` reads.
  int64_t window_of_row(int64_t row) const;

  // Rows [first, first + count) of the deterministic order (first >= 0, count >= 1).
  // Thread-safe.
  LmBatch rows(int64_t first, int64_t count) const;

 private:
  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t epoch) const;

  std::shared_ptr<const io::TokenShardSet> split_;
  LmRowsOptions options_;
  int64_t windows_ = 0;
  mutable std::mutex cache_mutex_;
  mutable std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> permutations_;  // by epoch, at most 2
};

// The permutation of [0, n) for (seed, epoch): Fisher-Yates driven by splitmix64, the same on
// every platform (std::shuffle is implementation-defined). Exposed for tests.
std::vector<int64_t> window_permutation(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace lintime::data
