// MQAR recall: each recall mixer, trained by the MQAR trainer on the shipped small setting (L 64,
// 4 key-value pairs, vocabulary 128, d 64), must reach 90% accuracy on the held-out test set,
// and a model without a recall mechanism, [base_conv, base_conv] (two short convolutions, a
// receptive field of a few tokens), trained as long as the slowest of them needs, must not.
// A model that only learns which values occur in the context can reach 25% (one of the four
// values); only recall gets past it. The overfitting runs in tests/models cannot tell these
// apart: every model, the convolution-only one included, fits a fixed batch. Each run's reported
// accuracy (the head at the labelled positions) equals its checkpoint's full-logits accuracy.
#include "data/mqar_metric.h"
#include "models/mqar_model.h"
#include "train/checkpoint.h"
#include "train/mqar_config.h"
#include "train/mqar_trainer.h"

#include "support/test_support.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {
namespace fs = std::filesystem;

// One intra-op thread: the models are tiny and ctest runs tests side by side on 2 cores.
class SingleThreadEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { at::set_num_threads(1); }
};
const auto* const kSingleThread = ::testing::AddGlobalTestEnvironment(new SingleThreadEnvironment);

constexpr double kRecallBar = 0.9;
// Steps the negative control trains for: more than any recall mixer below needed to pass the
// bar on 2 CPU cores (linear attention, the slowest, passed at step 1,350 when measured).
constexpr int64_t kControlSteps = 1500;

std::string config_path(const std::string& name) {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  return (fs::path(source ? source : ".") / "configs" / "mqar" / name).string();
}

// The test accuracy of a run's checkpoint with the head at every position (mqar_example_accuracy
// on the full logits), where evaluate_mqar computes it at the labelled positions only.
double accuracy_from_full_logits(const std::string& run_dir) {
  lintime::train::MqarTrainConfig config;
  (void)lintime::train::evaluate_mqar_checkpoint(run_dir, "cpu", &config);
  lintime::models::MqarModel model(config.model, config.optim.seed);
  lintime::train::load_checkpoint((fs::path(run_dir) / "checkpoint").string(), model, nullptr);
  at::NoGradGuard no_grad;
  const auto test = lintime::train::make_test_dataset(config);
  lintime::data::MqarAccuracy accuracy(test.num_segments());
  for (int64_t segment = 0; segment < test.num_segments(); ++segment) {
    for (int64_t batch = 0; batch < test.num_batches(segment); ++batch) {
      const auto examples = test.batch(segment, batch);
      accuracy.add(segment, model.forward(examples.inputs), examples.labels);
    }
  }
  return accuracy.overall();
}

// Trains `config` with `overrides` (--set syntax), stopping early at the bar, and returns the
// final test accuracy; prints one line with the run's steps and time. The accuracy must equal
// the full-logits one of the checkpoint (up to an argmax tie flipped by the head's rounding in
// a product of another shape: a few positions of the 8,000).
double trained_accuracy(const std::string& name, const std::string& config, std::vector<std::string> overrides) {
  overrides.push_back("train.target_accuracy=" + std::to_string(kRecallBar));
  overrides.push_back("train.eval_every=50");
  overrides.push_back("train.log_every=1000");
  auto train_config = lintime::train::load_mqar_train_config(config_path(config), overrides);
  lintime::testing::TempDir dir;
  lintime::train::MqarTrainOptions options;
  options.out_dir = dir.file("run");
  options.device = "cpu";
  const auto result = lintime::train::train_mqar(train_config, options);
  std::printf("%s: test accuracy %.4f after %lld of %lld steps, %.1f s\n", name.c_str(), result.evaluation.accuracy,
              static_cast<long long>(result.steps), static_cast<long long>(result.total_steps), result.wall_seconds);
  EXPECT_NEAR(result.evaluation.accuracy, accuracy_from_full_logits(options.out_dir), 1e-3) << name;
  return result.evaluation.accuracy;
}

TEST(MqarRecall, GsaPassesTheBar) {
  EXPECT_GE(trained_accuracy("gsa", "gsa-small.toml", {}), kRecallBar);
}

TEST(MqarRecall, GlaPassesTheBar) {
  EXPECT_GE(trained_accuracy("base_conv + gla", "gsa-small.toml",
                             {"model.layers=[\"base_conv\",\"gla\"]", "train.lr=3e-3", "train.epochs=8"}),
            kRecallBar);
}

TEST(MqarRecall, BasedPassesTheBar) {
  EXPECT_GE(trained_accuracy("base_conv + based", "based-small.toml", {}), kRecallBar);
}

TEST(MqarRecall, SoftmaxAttentionPassesTheBar) {
  EXPECT_GE(trained_accuracy("base_conv + attention", "attention-small.toml", {}), kRecallBar);
}

TEST(MqarRecall, LinearAttentionPassesTheBar) {
  EXPECT_GE(trained_accuracy("base_conv + linear attention (elu+1)", "linear-attention-small.toml", {}), kRecallBar);
}

// The negative control: same data, same trainer, no recall mechanism.
TEST(MqarRecall, ConvolutionsAloneFailTheBar) {
  const double accuracy =
      trained_accuracy("base_conv + base_conv", "based-small.toml",
                       {"model.layers=[\"base_conv\",\"base_conv\"]", "train.max_steps=" + std::to_string(kControlSteps)});
  EXPECT_LT(accuracy, kRecallBar) << "a model without recall passed the bar: the bar no longer measures recall";
}

}  // namespace
