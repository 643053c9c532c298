// MQAR generator, dataset order and metric: determinism per (seed, index), the task's
// invariants (docs/mqar.md §1), parameter errors, the gap law, and accuracy/loss on hand-made
// logits.
#include "data/mqar.h"
#include "data/mqar_metric.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "support/test_support.h"

#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>

namespace {

using lintime::data::MqarAccuracy;
using lintime::data::MqarBatchRef;
using lintime::data::MqarDataset;
using lintime::data::MqarSegmentConfig;

using lintime::testing::error_of;

std::pair<std::vector<int64_t>, std::vector<int64_t>> example(const MqarSegmentConfig& c, uint64_t seed,
                                                              int64_t index) {
  std::vector<int64_t> inputs(c.input_seq_len), labels(c.input_seq_len);
  lintime::data::generate_mqar_example(c, seed, index, inputs.data(), labels.data());
  return {inputs, labels};
}

// Checks every invariant of one example; `case_name` names it in failures.
void expect_valid_example(const MqarSegmentConfig& c, const int64_t* in, const int64_t* lab,
                          const std::string& case_name) {
  const int64_t L = c.input_seq_len, N = c.num_kv_pairs, V = c.vocab_size, context = 2 * N;
  std::map<int64_t, int64_t> value_of_key;
  std::set<int64_t> values;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t key = in[2 * i], value = in[2 * i + 1];
    ASSERT_GE(key, 1) << case_name;
    ASSERT_LT(key, V / 2) << case_name;
    ASSERT_GE(value, V / 2) << case_name;
    ASSERT_LT(value, V) << case_name;
    ASSERT_TRUE(value_of_key.emplace(key, value).second) << case_name << ": repeated key " << key;
    ASSERT_TRUE(values.insert(value).second) << case_name << ": repeated value " << value;
    ASSERT_EQ(lab[2 * i], -100) << case_name << ": context position " << 2 * i << " is labelled";
    ASSERT_EQ(lab[2 * i + 1], -100) << case_name;
  }
  std::set<int64_t> queried;
  int64_t labelled = 0;
  for (int64_t p = context; p < L; ++p) {
    if (lab[p] != -100) {
      ++labelled;
      ASSERT_EQ((p - context) % 2, 0) << case_name << ": label at odd query offset " << p;
      ASSERT_TRUE(value_of_key.count(in[p])) << case_name << ": position " << p << " queries a non-key";
      ASSERT_EQ(lab[p], value_of_key[in[p]]) << case_name << ": wrong label at " << p;
      ASSERT_TRUE(queried.insert(in[p]).second) << case_name << ": key queried twice";
    } else if (!c.random_non_queries) {
      ASSERT_EQ(in[p], 0) << case_name << ": non-query position " << p << " is not 0";
    }
  }
  ASSERT_EQ(labelled, N) << case_name;
  ASSERT_EQ(static_cast<int64_t>(queried.size()), N) << case_name;
}

TEST(MqarGenerator, DeterministicPerSeedAndIndex) {
  MqarSegmentConfig c{8192, 128, 8, 100};
  EXPECT_EQ(example(c, 7, 42), example(c, 7, 42));
  EXPECT_NE(example(c, 7, 42), example(c, 7, 43));
  EXPECT_NE(example(c, 7, 42), example(c, 8, 42));

  // A dataset's rows are the examples generated alone, whatever the order they are asked in.
  MqarDataset dataset({c}, 7, 16);
  const std::vector<int64_t> indices = {42, 3, 99};
  auto batch = dataset.gather(0, indices);
  for (size_t row = 0; row < indices.size(); ++row) {
    auto [inputs, labels] = example(c, 7, indices[row]);
    auto in_row = batch.inputs[row].contiguous();
    auto label_row = batch.labels[row].contiguous();
    EXPECT_EQ(std::vector<int64_t>(in_row.data_ptr<int64_t>(), in_row.data_ptr<int64_t>() + 128), inputs);
    EXPECT_EQ(std::vector<int64_t>(label_row.data_ptr<int64_t>(), label_row.data_ptr<int64_t>() + 128), labels);
  }
  EXPECT_TRUE(at::equal(dataset.examples(0, 3, 1).inputs[0], batch.inputs[1]));
}

TEST(MqarGenerator, GlobalIndexRunsAcrossSegments) {
  MqarSegmentConfig first{8192, 64, 4, 10}, second{8192, 128, 8, 20};
  MqarDataset dataset({first, second}, 11, 8);
  auto batch = dataset.examples(1, 5, 1);
  auto [inputs, labels] = example(second, 11, 10 + 5);
  auto row = batch.inputs[0].contiguous();
  EXPECT_EQ(std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + 128), inputs);
  EXPECT_EQ(batch.segment, 1);
  EXPECT_EQ(batch.indices, std::vector<int64_t>{5});
}

TEST(MqarGenerator, ExamplesSatisfyTheTaskInvariants) {
  // Large vocabulary; tight vocabulary (V = L + 1) with the most pairs 4N = L; one pair.
  const std::vector<MqarSegmentConfig> cases = {
      {8192, 512, 64, 64}, {129, 128, 32, 64}, {8192, 64, 4, 64}, {17, 16, 1, 64}, {8192, 256, 64, 64}};
  for (const auto& c : cases) {
    MqarDataset dataset({c}, 5, 64);
    auto batch = dataset.batch(0, 0);
    ASSERT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{64, c.input_seq_len}));
    ASSERT_EQ(batch.inputs.scalar_type(), at::kLong);
    ASSERT_EQ(batch.labels.scalar_type(), at::kLong);
    for (int64_t row = 0; row < 64; ++row) {
      auto in = batch.inputs[row].contiguous();
      auto lab = batch.labels[row].contiguous();
      expect_valid_example(c, in.data_ptr<int64_t>(), lab.data_ptr<int64_t>(),
                           lintime::data::describe(c) + " row " + std::to_string(row));
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(MqarGenerator, RandomNonQueriesOnlyFillsTheZeros) {
  MqarSegmentConfig plain{8192, 256, 16, 32};
  MqarSegmentConfig noisy = plain;
  noisy.random_non_queries = true;
  MqarDataset a({plain}, 3, 32), b({noisy}, 3, 32);
  auto x = a.batch(0, 0), y = b.batch(0, 0);
  EXPECT_TRUE(at::equal(x.labels, y.labels));
  const at::Tensor zeros = x.inputs.eq(0);
  EXPECT_TRUE(at::equal(x.inputs.masked_select(zeros.logical_not()), y.inputs.masked_select(zeros.logical_not())));
  const at::Tensor filled = y.inputs.masked_select(zeros);
  ASSERT_GT(filled.numel(), 1000);
  // Uniform over [0, V): about half below V/2, nearly none equal to 0.
  const double low = filled.lt(4096).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(low, 0.5, 0.05);
  EXPECT_LT(filled.eq(0).sum().item<int64_t>(), 5);
  EXPECT_GE(filled.min().item<int64_t>(), 0);
  EXPECT_LT(filled.max().item<int64_t>(), 8192);
  for (int64_t row = 0; row < 32; ++row) {
    auto in = y.inputs[row].contiguous();
    auto lab = y.labels[row].contiguous();
    expect_valid_example(noisy, in.data_ptr<int64_t>(), lab.data_ptr<int64_t>(), "noisy row " + std::to_string(row));
  }
}

TEST(MqarGenerator, InvalidParametersAreNamed) {
  auto message = [](MqarSegmentConfig c) { return error_of([&] { lintime::data::validate(c, "train segment 0"); }); };
  EXPECT_NE(message({64, 64, 4, 10}).find("vocab_size must be > seq_len = 64, got 64"), std::string::npos)
      << message({64, 64, 4, 10});
  EXPECT_NE(message({8192, 63, 4, 10}).find("seq_len must be even and in [2, 16777216], got 63"), std::string::npos);
  EXPECT_NE(message({8192, 64, 17, 10}).find("kv_pairs must satisfy 4 * kv_pairs <= seq_len = 64, got 17"), std::string::npos);
  EXPECT_NE(message({8192, 64, 0, 10}).find("kv_pairs must be >= 1, got 0"), std::string::npos);
  EXPECT_NE(message({8192, 64, 4, 0}).find("examples must be in [1, 2^30], got 0"), std::string::npos);
  EXPECT_NE(message({8192, 64, 4, 10, 0.0}).find("power_a must be finite and > 0"), std::string::npos);
  EXPECT_EQ(message({8192, 64, 16, 10}), "");
  EXPECT_EQ(message({8192, 64, 17, 10}).rfind("train segment 0:", 0), 0u);

  EXPECT_NE(error_of([] { MqarDataset({{8192, 64, 4, 10}, {10, 64, 4, 10}}, 0, 4); }).find("mqar segment 1: vocab_size"),
            std::string::npos);
  EXPECT_NE(error_of([] { MqarDataset({{8192, 64, 4, 10}}, 0, 0); }).find("batch_size must be >= 1"), std::string::npos);
  EXPECT_NE(error_of([] { MqarDataset({}, 0, 4); }).find("segments must not be empty"), std::string::npos);
  MqarDataset dataset({{8192, 64, 4, 10}}, 0, 4);
  EXPECT_NE(error_of([&] { dataset.examples(0, 10, 1); }).find("first example must be in [0, 10), got 10"),
            std::string::npos);
  EXPECT_NE(error_of([&] { dataset.batch(1, 0); }).find("segment must be in [0, 1), got 1"), std::string::npos);
}

TEST(MqarGenerator, StandardSegmentListsAreValid) {
  for (const auto& list : {lintime::data::based_train_segments(), lintime::data::based_test_segments(),
                           lintime::data::gsa_paper_train_segments(), lintime::data::gsa_paper_test_segments()}) {
    for (const auto& c : list) EXPECT_EQ(error_of([&] { lintime::data::validate(c); }), "") << lintime::data::describe(c);
  }
  EXPECT_EQ(lintime::data::based_test_segments().back().input_seq_len, 1024);
}

// Gap of each query in slots after the context: (position − 2N) / 2.
std::vector<int64_t> gap_histogram(const MqarSegmentConfig& c, uint64_t seed) {
  MqarDataset dataset({c}, seed, c.num_examples);
  auto batch = dataset.batch(0, 0);
  const int64_t slots = (c.input_seq_len - 2 * c.num_kv_pairs) / 2;
  std::vector<int64_t> histogram(slots, 0);
  auto positions = batch.labels.ne(-100).nonzero().select(1, 1).contiguous();
  for (int64_t i = 0; i < positions.numel(); ++i) {
    histogram[(positions.data_ptr<int64_t>()[i] - 2 * c.num_kv_pairs) / 2] += 1;
  }
  return histogram;
}

TEST(MqarGenerator, GapsClusterRightAfterTheContext) {
  // N = 1: the gap law is exactly p(g) ∝ (g + 1)^(a − 1) over 31 slots. 20000 draws give a
  // standard error of about 0.003 on each probability; the bound is 0.015.
  MqarSegmentConfig single{8192, 64, 1, 20000};
  auto histogram = gap_histogram(single, 123);
  double normalizer = 0;
  for (int64_t g = 0; g < 31; ++g) normalizer += std::pow(g + 1.0, 0.01 - 1.0);
  for (int64_t g : {0, 1, 2, 10, 30}) {
    const double expected = std::pow(g + 1.0, 0.01 - 1.0) / normalizer;
    EXPECT_NEAR(histogram[g] / 20000.0, expected, 0.015) << "gap " << g;
  }
  // The GSA setting (192 slots, 64 queries without replacement): the first quarter of the
  // slots holds far more queries than the last quarter.
  MqarSegmentConfig gsa{8192, 512, 64, 200};
  auto wide = gap_histogram(gsa, 321);
  int64_t first = 0, last = 0;
  for (int64_t g = 0; g < 48; ++g) first += wide[g];
  for (int64_t g = 144; g < 192; ++g) last += wide[g];
  EXPECT_GT(first, 2 * last) << "first quarter " << first << ", last quarter " << last;
  // power_a = 1 is uniform: both quarters within 15% of each other.
  gsa.power_a = 1.0;
  auto uniform = gap_histogram(gsa, 321);
  first = last = 0;
  for (int64_t g = 0; g < 48; ++g) first += uniform[g];
  for (int64_t g = 144; g < 192; ++g) last += uniform[g];
  EXPECT_NEAR(static_cast<double>(first) / last, 1.0, 0.15);
}

TEST(MqarDataOrder, EveryBatchOncePerEpochDeterministically) {
  MqarDataset dataset({{8192, 64, 4, 50}, {8192, 128, 8, 17}, {8192, 64, 8, 8}}, 9, 8);
  ASSERT_EQ(dataset.num_batches(0), 7);
  ASSERT_EQ(dataset.num_batches(1), 3);
  ASSERT_EQ(dataset.num_batches(2), 1);
  ASSERT_EQ(dataset.batches_per_epoch(), 11);
  auto order0 = dataset.epoch_order(0);
  EXPECT_EQ(order0, dataset.epoch_order(0));
  EXPECT_EQ(order0, MqarDataset(dataset.segments(), 9, 8).epoch_order(0));
  EXPECT_NE(order0, dataset.epoch_order(1));
  EXPECT_NE(order0, MqarDataset(dataset.segments(), 10, 8).epoch_order(0));

  for (int64_t epoch : {0, 1, 5}) {
    auto order = dataset.epoch_order(epoch);
    std::set<std::pair<int64_t, int64_t>> seen;
    std::vector<std::set<int64_t>> examples(3);
    for (size_t position = 0; position < order.size(); ++position) {
      const MqarBatchRef& ref = order[position];
      EXPECT_TRUE(seen.insert({ref.segment, ref.batch}).second);
      auto batch = dataset.training_batch(epoch, ref);
      EXPECT_EQ(batch.segment, ref.segment);
      EXPECT_EQ(batch.inputs.size(1), dataset.segment(ref.segment).input_seq_len);
      for (int64_t index : batch.indices) EXPECT_TRUE(examples[ref.segment].insert(index).second);
      // Resuming at the global step gives the same batch.
      auto resumed = dataset.training_batch_at_step(epoch * 11 + static_cast<int64_t>(position));
      EXPECT_EQ(resumed.segment, batch.segment);
      EXPECT_TRUE(at::equal(resumed.inputs, batch.inputs));
      EXPECT_TRUE(at::equal(resumed.labels, batch.labels));
    }
    EXPECT_EQ(seen.size(), 11u);
    EXPECT_EQ(examples[0].size(), 50u);
    EXPECT_EQ(examples[1].size(), 17u);
    EXPECT_EQ(examples[2].size(), 8u);
  }
  // Example shuffling changes with the epoch; without it batches are the natural ones.
  MqarBatchRef ref{0, 0};
  EXPECT_NE(dataset.training_batch(0, ref).indices, dataset.training_batch(1, ref).indices);
  EXPECT_EQ(dataset.training_batch(3, ref, false).indices, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(dataset.batch(1, 2).indices, (std::vector<int64_t>{16}));
}

TEST(MqarMetric, AccuracyAndLossOnHandMadeLogits) {
  // B = 2, L = 3, V = 4. Example 0: labels at positions 0 and 2, argmax right at 0 only.
  // Example 1: one label at position 1, argmax right.
  auto logits = at::zeros({2, 3, 4}, at::kFloat);
  logits[0][0][2] = 3.0;  // target 2: right
  logits[0][2][1] = 2.0;  // target 3: wrong
  logits[1][1][3] = 1.0;  // target 3: right
  logits[1][0][0] = 9.0;  // unlabelled: ignored
  auto labels = at::tensor({2, -100, 3, -100, 3, -100}, at::kLong).reshape({2, 3});
  auto accuracy = lintime::data::mqar_example_accuracy(logits, labels);
  ASSERT_EQ(accuracy.sizes(), (std::vector<int64_t>{2}));
  EXPECT_DOUBLE_EQ(accuracy[0].item<double>(), 0.5);
  EXPECT_DOUBLE_EQ(accuracy[1].item<double>(), 1.0);

  // Cross-entropy over the three labelled positions only.
  auto nll = [](std::vector<double> row, int64_t target) {
    double sum = 0;
    for (double x : row) sum += std::exp(x);
    return std::log(sum) - row[target];
  };
  const double expected = (nll({0, 0, 3, 0}, 2) + nll({0, 2, 0, 0}, 3) + nll({0, 0, 0, 1}, 3)) / 3.0;
  auto loss = lintime::data::mqar_loss(logits.requires_grad_(), labels);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-6);
  loss.backward();
  EXPECT_EQ(logits.grad()[1][0].abs().sum().item<double>(), 0.0);  // ignored position

  // The same loss from the labelled positions alone (what training computes the head at).
  const auto labelled = lintime::data::mqar_labelled(labels);
  EXPECT_TRUE(labelled.positions.equal(at::tensor({0, 2, 4}, at::kLong)));
  EXPECT_TRUE(labelled.labels.equal(at::tensor({2, 3, 3}, at::kLong)));
  const at::Tensor rows = logits.detach().reshape({-1, 4}).index_select(0, labelled.positions);
  EXPECT_NEAR(lintime::data::mqar_labelled_loss(rows, labelled.labels).item<double>(), expected, 1e-6);
  EXPECT_NE(error_of([&] { lintime::data::mqar_labelled_loss(rows, at::zeros({2}, at::kLong)); })
                .find("labels must be an int64 tensor of shape [P] = [3]"),
            std::string::npos);

  // The per-example accuracies from those rows alone (what evaluation computes the head at).
  const at::Tensor from_rows = lintime::data::mqar_labelled_example_accuracy(rows, labelled, 2, 3);
  EXPECT_TRUE(from_rows.equal(accuracy)) << from_rows;
  EXPECT_NE(error_of([&] { lintime::data::mqar_labelled_example_accuracy(rows.narrow(0, 0, 2), labelled, 2, 3); })
                .find("P = the labelled positions (3)"),
            std::string::npos);

  MqarAccuracy total(2);
  total.add(0, accuracy);                        // 0.5, 1.0
  total.add(1, at::tensor({0.0}, at::kDouble));  // 0.0
  EXPECT_DOUBLE_EQ(total.segment(1), 0.0);       // read once: later adds still count
  total.add(1, at::tensor({1.0}, at::kDouble));  // 1.0
  EXPECT_DOUBLE_EQ(total.segment(1), 0.5);
  total.add(1, at::tensor({0.0}, at::kDouble));  // 0.0
  EXPECT_DOUBLE_EQ(total.segment(0), 0.75);
  EXPECT_NEAR(total.segment(1), 1.0 / 3.0, 1e-15);
  EXPECT_DOUBLE_EQ(total.overall(), 0.5);  // mean over the five examples: (0.5 + 1 + 0 + 1 + 0) / 5
  EXPECT_EQ(total.count(), 5);
  EXPECT_TRUE(std::isnan(MqarAccuracy(1).overall()));
  EXPECT_NE(error_of([] { lintime::data::mqar_loss(at::zeros({2, 3}), at::zeros({2, 3}, at::kLong)); })
                .find("logits must have shape [B, L, V]"),
            std::string::npos);
}

}  // namespace
