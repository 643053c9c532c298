// Global-norm clipping against hand-computed norms, and the JSON-lines metrics log.
#include "train/grad_clip.h"
#include "train/metrics_log.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <unistd.h>

namespace {

using lintime::train::clip_grad_norm;

at::Tensor with_grad(at::Tensor parameter, at::Tensor gradient) {
  parameter.set_requires_grad(true);
  parameter.mutable_grad() = gradient;
  return parameter;
}

TEST(GradClip, ScalesToMaxNorm) {
  // Gradients (3, 4) and (12): global norm sqrt(9 + 16 + 144) = 13.
  std::vector<at::Tensor> parameters = {
      with_grad(at::zeros({2}), at::tensor({3.0f, 4.0f})),
      with_grad(at::zeros({1, 1}), at::tensor({12.0f}).view({1, 1})),
      at::zeros({3}).set_requires_grad(true),  // no gradient: skipped
  };
  at::Tensor norm = clip_grad_norm(parameters, 6.5);
  EXPECT_NEAR(norm.item<double>(), 13.0, 1e-5);
  EXPECT_NEAR(parameters[0].grad()[0].item<double>(), 1.5, 1e-5);
  EXPECT_NEAR(lintime::train::grad_norm(parameters).item<double>(), 6.5, 1e-5);
  // Below the limit: unchanged.
  norm = clip_grad_norm(parameters, 100.0);
  EXPECT_NEAR(norm.item<double>(), 6.5, 1e-5);
  EXPECT_NEAR(parameters[1].grad().item<double>(), 6.0, 1e-5);
  // Non-finite norms throw when asked to, before touching anything.
  parameters[0].mutable_grad() = at::tensor({NAN, 1.0f});
  EXPECT_THROW(clip_grad_norm(parameters, 1.0, /*error_if_nonfinite=*/true), lintime::Error);
  EXPECT_NEAR(parameters[1].grad().item<double>(), 6.0, 1e-5);
  EXPECT_EQ(clip_grad_norm(std::vector<at::Tensor>{}, 1.0).item<double>(), 0.0);
}

TEST(MetricsLog, WritesOneFlushedObjectPerLine) {
  const std::string path = "/tmp/lintime_test_metrics_" + std::to_string(::getpid()) + ".jsonl";
  {
    lintime::train::MetricsLog log(path, /*append=*/false);
    log.write({{"step", 1}, {"loss", 2.5}});
    // Flushed: readable before the log is closed.
    std::ifstream early(path);
    std::string line;
    ASSERT_TRUE(std::getline(early, line));
    EXPECT_EQ(nlohmann::json::parse(line)["loss"], 2.5);
    log.write({{"step", 2}, {"loss", NAN}, {"name", "eval"}});
    EXPECT_THROW(log.write(nlohmann::json::array({1, 2})), lintime::Error);
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1]["step"], 2);
  EXPECT_TRUE(records[1]["loss"].is_null());
  ::unlink(path.c_str());
  EXPECT_THROW(lintime::train::MetricsLog("/nonexistent_dir/metrics.jsonl"), lintime::Error);
}

}  // namespace
