// MQAR training with whole-step CUDA graphs (train/graphed_step.h) against the same run launched
// op by op: 12 steps of the shipped small GSA setting with embedding dropout, gradient
// clipping and a warm-up, over an epoch whose last batch is shorter (two recorded shapes), must
// end with the same weights, AdamW moments and step counts, and log the same losses (in fp32;
// bf16's bounds below).
// Label `cuda`: skipped without a GPU.
#include "io/safetensors.h"
#include "train/mqar_config.h"
#include "train/mqar_trainer.h"

#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {
namespace fs = std::filesystem;

struct TrainedRun {
  std::map<std::string, at::Tensor> weights, optimizer;
  std::vector<double> losses;
};

TrainedRun train(const std::string& cuda_graph, const std::string& precision, const lintime::testing::TempDir& dir) {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  const std::string config_path = (fs::path(source ? source : ".") / "configs" / "mqar" / "gsa-small.toml").string();
  // 200 examples in batches of 64: 64, 64, 64, 8 per epoch.
  const auto config = lintime::train::load_mqar_train_config(
      config_path, {"data.train=[{seq_len=64,kv_pairs=4,examples=200}]", "train.epochs=3", "train.warmup_steps=3",
                    "model.embed_dropout=0.1", "train.log_every=1", "train.eval_every=100",
                    "train.precision=" + precision});
  lintime::train::MqarTrainOptions options;
  options.out_dir = dir.file(precision + "-" + cuda_graph);
  options.device = "cuda";
  options.cuda_graph = cuda_graph;
  const auto result = lintime::train::train_mqar(config, options);
  EXPECT_EQ(result.steps, 12);
  TrainedRun run;
  const fs::path checkpoint = fs::path(options.out_dir) / "checkpoint";
  run.weights = lintime::io::load_safetensors((checkpoint / "model.safetensors").string());
  run.optimizer = lintime::io::load_safetensors((checkpoint / "optimizer.safetensors").string());
  std::ifstream metrics(fs::path(options.out_dir) / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::json::parse(line);
    if (!record.contains("eval")) run.losses.push_back(record.at("loss").get<double>());
  }
  return run;
}

double relative_difference(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor a = actual.to(at::kDouble), e = expected.to(at::kDouble);
  return (a - e).abs().max().item<double>() / std::max(1e-30, e.abs().max().item<double>());
}

// fp32: the losses, weights and AdamW moments agree to 1e-5 (two eager runs differ too: the
// embedding's backward adds with atomics). bf16 (fp32 master weights): a bf16 rounding of an
// activation that falls the other way changes a gradient by a unit of bf16, and AdamW's update,
// about lr in size whatever the gradient's, can then take the other sign for gradients near
// zero: the runs' weights may drift apart by up to 2·lr per step, the losses by units of bf16.
// The step's mechanics (inputs staged, gradients into the masters, the copy back) are what a
// replay could get wrong, and those the losses of every step show.
void expect_graphed_equals_eager(const std::string& precision) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const bool bf16 = precision == "bf16";
  const double loss_tolerance = bf16 ? 1.0 / 64 : 1e-5;
  const double weight_bound = 2 * 12 * 1e-2;  // bf16: 2·lr per step, gsa-small's peak lr 1e-2
  lintime::testing::TempDir dir;
  const TrainedRun eager = train("off", precision, dir), graphed = train("on", precision, dir);
  ASSERT_EQ(graphed.losses.size(), 12u);
  ASSERT_EQ(eager.losses.size(), graphed.losses.size());
  for (size_t i = 0; i < eager.losses.size(); ++i)
    EXPECT_NEAR(graphed.losses[i], eager.losses[i], loss_tolerance * std::abs(eager.losses[i])) << "step " << i + 1;
  double worst = 0;
  using Tensors = std::map<std::string, at::Tensor>;
  for (const auto& [expected, actual] : {std::pair<const Tensors&, const Tensors&>{eager.weights, graphed.weights},
                                         {eager.optimizer, graphed.optimizer}}) {
    ASSERT_EQ(actual.size(), expected.size());
    for (const auto& [name, tensor] : expected) {
      ASSERT_TRUE(actual.count(name)) << name;
      if (name.size() > 5 && name.substr(name.size() - 5) == ".step") {
        EXPECT_EQ(actual.at(name).item<int64_t>(), 12) << name;  // host counts advanced per replay
        continue;
      }
      const bool moment = &expected == &eager.optimizer;
      if (bf16 && moment) continue;  // moments follow the gradients' roundings
      const double difference = bf16 ? (actual.at(name).to(at::kDouble) - tensor.to(at::kDouble)).abs().max().item<double>()
                                     : relative_difference(actual.at(name), tensor);
      worst = std::max(worst, difference);
      EXPECT_LE(difference, bf16 ? weight_bound : 1e-5) << name;
    }
  }
  std::printf("%s: graphed vs eager after 12 steps: largest %s difference %.3g\n", precision.c_str(),
              bf16 ? "absolute weight" : "relative", worst);
}

TEST(MqarGraphCuda, GraphedStepsEqualEagerStepsFloat32) { expect_graphed_equals_eager("fp32"); }
TEST(MqarGraphCuda, GraphedStepsFollowEagerStepsBf16) { expect_graphed_equals_eager("bf16"); }

}  // namespace
