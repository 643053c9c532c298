// LM rows from token shards: every row is a real window of the stream with labels shifted by
// one; -100 exactly before tokens that begin a document; cu_seqlens exactly right on a
// hand-built corpus; rows are a pure function of (seed, row index); an epoch covers every window
// once; shuffle = false is corpus order; document_boundaries = false gives plain windows.
// The corpus is written with small shards so that windows and documents cross shard files.
#include "core/error.h"
#include "data/lm_batches.h"
#include "io/token_shards.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <numeric>
#include <set>

namespace {

using lintime::data::LmBatch;
using lintime::data::LmRows;
using lintime::data::LmRowsOptions;
using lintime::testing::error_of;
using lintime::testing::TempDir;

// A corpus whose token at stream position p is p + 10, so a token tells where it came from.
struct Corpus {
  TempDir dir;
  std::vector<int64_t> stream;
  std::set<int64_t> document_starts;
  std::shared_ptr<const lintime::io::TokenShardSet> split;

  Corpus(const std::vector<int64_t>& document_lengths, int64_t shard_tokens) {
    lintime::io::TokenShardWriter writer(dir.path(), "train", lintime::io::TokenDtype::uint16, shard_tokens);
    for (int64_t length : document_lengths) {
      std::vector<int64_t> document(length);
      document_starts.insert(static_cast<int64_t>(stream.size()));
      for (auto& id : document) {
        id = static_cast<int64_t>(stream.size()) + 10;
        stream.push_back(id);
      }
      writer.add_document(document);
    }
    lintime::io::TokenManifest manifest;
    manifest.tokenizer = {"test", 65536, "fnv1a64:0", "test"};
    manifest.splits["train"] = writer.finish();
    lintime::io::write_token_manifest(dir.path(), manifest);
    split = lintime::io::TokenShardSet::open(dir.path(), "train");
  }
};

std::vector<int64_t> to_vector(const at::Tensor& tensor) {
  const at::Tensor flat = tensor.contiguous().view({-1}).to(at::kLong);
  return {flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel()};
}

// Checks `batch` against the definition and returns the window of every row.
std::vector<int64_t> check_batch(const Corpus& corpus, const LmBatch& batch, int64_t seq_len, bool boundaries) {
  const int64_t rows = batch.input_ids.size(0);
  EXPECT_EQ(batch.input_ids.sizes(), (at::IntArrayRef{rows, seq_len}));
  EXPECT_EQ(batch.labels.sizes(), (at::IntArrayRef{rows, seq_len}));
  EXPECT_EQ(batch.input_ids.scalar_type(), at::kLong);
  EXPECT_EQ(batch.labels.scalar_type(), at::kLong);
  const auto inputs = to_vector(batch.input_ids), labels = to_vector(batch.labels);
  std::vector<int64_t> windows, cu_seqlens;
  int64_t targets = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t begin = inputs[r * seq_len] - 10;
    EXPECT_EQ(begin % seq_len, 0) << "row " << r << " starts at stream position " << begin;
    windows.push_back(begin / seq_len);
    if (boundaries) cu_seqlens.push_back(r * seq_len);
    for (int64_t i = 0; i < seq_len; ++i) {
      EXPECT_EQ(inputs[r * seq_len + i], corpus.stream.at(begin + i)) << "row " << r << " position " << i;
      const bool next_starts_document = corpus.document_starts.count(begin + i + 1) > 0;
      const int64_t expected_label = boundaries && next_starts_document ? -100 : corpus.stream.at(begin + i + 1);
      EXPECT_EQ(labels[r * seq_len + i], expected_label) << "row " << r << " position " << i;
      targets += expected_label != -100;
      if (boundaries && i > 0 && corpus.document_starts.count(begin + i)) cu_seqlens.push_back(r * seq_len + i);
    }
  }
  EXPECT_EQ(batch.target_tokens, targets);
  if (boundaries) {
    cu_seqlens.push_back(rows * seq_len);
    EXPECT_TRUE(batch.cu_seqlens.defined());
    if (batch.cu_seqlens.defined()) {
      EXPECT_EQ(batch.cu_seqlens.scalar_type(), at::kInt);
      EXPECT_EQ(to_vector(batch.cu_seqlens), cu_seqlens);
    }
  } else {
    EXPECT_FALSE(batch.cu_seqlens.defined());
  }
  return windows;
}

const std::vector<int64_t> kHandLengths = {3, 7, 1, 4, 2, 6};  // starts 0, 3, 10, 11, 15, 17; 23 tokens

TEST(LmBatches, HandBuiltCorpusInCorpusOrder) {
  Corpus corpus(kHandLengths, 5);
  LmRows rows(corpus.split, {.seq_len = 4, .seed = 0, .document_boundaries = true, .shuffle = false});
  ASSERT_EQ(rows.windows(), 5);  // (23 - 1) / 4
  const LmBatch batch = rows.rows(0, 5);
  // Windows [0,4], [4,8], [8,12], [12,16], [16,20]: documents start inside rows at 3, 10, 11, 15, 17.
  EXPECT_EQ(to_vector(batch.cu_seqlens), (std::vector<int64_t>{0, 3, 4, 8, 10, 11, 12, 15, 16, 17, 20}));
  EXPECT_EQ(to_vector(batch.labels), (std::vector<int64_t>{11, 12, -100, 14,  //
                                                           15, 16, 17, 18,    //
                                                           19, -100, -100, 22,  //
                                                           23, 24, -100, 26,    //
                                                           -100, 28, 29, 30}));
  EXPECT_EQ(batch.target_tokens, 15);
  EXPECT_EQ(check_batch(corpus, batch, 4, true), (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(LmBatches, DocumentStartAtTheRowEndMasksTheLastLabel) {
  Corpus corpus(kHandLengths, 5);
  LmRows rows(corpus.split, {.seq_len = 3, .shuffle = false});
  const LmBatch batch = rows.rows(0, 1);  // window [0, 3]: the document at 3 begins at the label of position 2
  EXPECT_EQ(to_vector(batch.labels), (std::vector<int64_t>{11, 12, -100}));
  EXPECT_EQ(to_vector(batch.cu_seqlens), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(batch.target_tokens, 2);
}

TEST(LmBatches, EveryRowIsARealWindowForManyShapes) {
  Corpus corpus({5, 1, 1, 30, 2, 17, 9, 1, 40, 3, 11}, 7);
  for (int64_t seq_len : {1, 2, 3, 8, 13, 50}) {
    for (bool boundaries : {true, false}) {
      SCOPED_TRACE("seq_len " + std::to_string(seq_len) + (boundaries ? " with" : " without") + " boundaries");
      LmRows rows(corpus.split, {.seq_len = seq_len, .seed = 5, .document_boundaries = boundaries});
      EXPECT_EQ(rows.windows(), (static_cast<int64_t>(corpus.stream.size()) - 1) / seq_len);
      for (int64_t first : {0, 3, 11}) check_batch(corpus, rows.rows(first, 4), seq_len, boundaries);
    }
  }
}

TEST(LmBatches, WithoutBoundariesRowsArePlainWindows) {
  Corpus corpus(kHandLengths, 5);
  LmRows rows(corpus.split, {.seq_len = 4, .document_boundaries = false, .shuffle = false});
  const LmBatch batch = rows.rows(1, 2);
  EXPECT_FALSE(batch.cu_seqlens.defined());
  EXPECT_EQ(batch.target_tokens, 8);
  EXPECT_EQ(to_vector(batch.input_ids), (std::vector<int64_t>{14, 15, 16, 17, 18, 19, 20, 21}));
  EXPECT_EQ(to_vector(batch.labels), (std::vector<int64_t>{15, 16, 17, 18, 19, 20, 21, 22}));
}

TEST(LmBatches, RowsAreAPureFunctionOfSeedAndIndex) {
  Corpus corpus(std::vector<int64_t>(60, 17), 100);  // 1020 tokens
  const LmRowsOptions options{.seq_len = 8, .seed = 1234};
  LmRows a(corpus.split, options), b(corpus.split, options);
  // Different call histories (b has cached other epochs) give the same rows.
  b.rows(5 * b.windows(), 3);
  b.rows(9 * b.windows() + 1, 2);
  for (int64_t first : {int64_t{0}, int64_t{37}, a.windows() - 2, 3 * a.windows() + 5}) {
    const LmBatch x = a.rows(first, 4), y = b.rows(first, 4);
    EXPECT_TRUE(at::equal(x.input_ids, y.input_ids)) << "first " << first;
    EXPECT_TRUE(at::equal(x.labels, y.labels)) << "first " << first;
    EXPECT_TRUE(at::equal(x.cu_seqlens, y.cu_seqlens)) << "first " << first;
  }
  // A batch that straddles two epochs equals its rows fetched one at a time.
  const int64_t first = a.windows() - 2;
  const LmBatch whole = a.rows(first, 4);
  for (int64_t r = 0; r < 4; ++r) {
    EXPECT_TRUE(at::equal(whole.input_ids[r], b.rows(first + r, 1).input_ids[0])) << "row " << r;
  }
  // Another seed gives another order.
  LmRows c(corpus.split, {.seq_len = 8, .seed = 1235});
  EXPECT_FALSE(at::equal(a.rows(0, 16).input_ids, c.rows(0, 16).input_ids));
}

TEST(LmBatches, AnEpochCoversEveryWindowOnce) {
  Corpus corpus(std::vector<int64_t>(40, 13), 64);  // 520 tokens
  LmRows rows(corpus.split, {.seq_len = 6, .seed = 7});
  const int64_t windows = rows.windows();
  ASSERT_EQ(windows, 86);
  std::vector<std::vector<int64_t>> epochs;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> seen;
    for (int64_t first = epoch * windows; first < (epoch + 1) * windows; first += 10) {
      const int64_t count = std::min<int64_t>(10, (epoch + 1) * windows - first);
      const auto batch_windows = check_batch(corpus, rows.rows(first, count), 6, true);
      seen.insert(seen.end(), batch_windows.begin(), batch_windows.end());
    }
    for (int64_t i = 0; i < windows; ++i) EXPECT_EQ(seen[i], rows.window_of_row(epoch * windows + i));
    epochs.push_back(seen);
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> all(windows);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(seen, all) << "epoch " << epoch;
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
}

TEST(LmBatches, WithoutShuffleRowsFollowTheCorpus) {
  Corpus corpus(std::vector<int64_t>(10, 9), 32);  // 90 tokens
  LmRows rows(corpus.split, {.seq_len = 8, .seed = 99, .shuffle = false});
  ASSERT_EQ(rows.windows(), 11);
  std::vector<int64_t> expected;
  for (int64_t i = 0; i < 15; ++i) expected.push_back(i % 11);
  EXPECT_EQ(check_batch(corpus, rows.rows(0, 15), 8, true), expected);
}

TEST(LmBatches, WindowPermutationIsFixedAcrossPlatforms) {
  // Values from an independent Python transcription of the algorithm: a change here changes every
  // training run's data order.
  EXPECT_EQ(lintime::data::window_permutation(10, 1, 0), (std::vector<int64_t>{0, 1, 2, 8, 4, 9, 6, 5, 7, 3}));
  EXPECT_EQ(lintime::data::window_permutation(10, 1, 1), (std::vector<int64_t>{8, 7, 9, 0, 1, 4, 3, 2, 5, 6}));
  EXPECT_TRUE(lintime::data::window_permutation(0, 1, 0).empty());
  EXPECT_EQ(lintime::data::window_permutation(1, 1, 0), std::vector<int64_t>{0});
}

TEST(LmBatches, ErrorsSayWhatWasExpected) {
  Corpus corpus(kHandLengths, 5);
  EXPECT_NE(error_of([&] { LmRows(corpus.split, {.seq_len = 0}); }).find("seq_len must be >= 1, got 0"),
            std::string::npos);
  const std::string error = error_of([&] { LmRows(corpus.split, {.seq_len = 23}); });
  EXPECT_NE(error.find("holds 23 tokens, fewer than seq_len + 1 = 24 for one row"), std::string::npos) << error;
  LmRows rows(corpus.split, {.seq_len = 4});
  EXPECT_NE(error_of([&] { rows.rows(-1, 2); }).find("expected first >= 0 and count >= 1"), std::string::npos);
}

}  // namespace
