// Language-model training on a GPU in bf16 and fp16 (fp16 with a loss scale of 256, at which
// the first step's gradients do not overflow, so that the step is taken): one step
// of the trainer (bf16/fp16 compute, fp32 master weights, fused AdamW, the chunked
// cross-entropy's CUDA path) against a float64 step on the CPU. Tolerance from precision: the
// GPU step's update differs from the float64 update by at most twice what the same step
// computed on the CPU in that dtype differs by (FlashAttention's rule), the loss likewise.
// Label `cuda`: skipped without a GPU.
#include "support/lm_shards.h"
#include "support/test_support.h"
#include "io/safetensors.h"
#include "models/architecture.h"
#include "models/causal_lm.h"
#include "train/lm_trainer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <string>

namespace {

namespace fs = std::filesystem;
using lintime::testing::fresh_dir;

struct StepResult {
  std::map<std::string, at::Tensor> weights;
  double loss = 0;
};

StepResult one_step(const fs::path& shards, const std::string& precision, const std::string& device) {
  nlohmann::json document = {
      {"task", "lm"},
      {"model", {{"config", lintime::testing::tiny_gsa_config(lintime::testing::kLmTestVocab)}}},
      {"data", {{"shards", shards.string()}, {"seq_len", 64}}},
      {"train",
       {{"batch_tokens", 512}, {"micro_batch_rows", 4}, {"max_steps", 1}, {"lr", 1e-2}, {"eps", 1e-3},
        {"grad_clip", 0.0}, {"schedule", "constant"}, {"precision", precision}, {"eval_every", 1},
        {"eval_tokens", 64}, {"log_every", 1}, {"loss_scale", 256}}}};
  const auto config = lintime::train::LmTrainConfig::from_document(document);
  const fs::path run = fresh_dir("cuda-" + precision + "-" + device);
  lintime::train::LmTrainOptions options;
  options.out_dir = run.string();
  options.device = device;
  lintime::train::train_lm(config, options);
  StepResult result;
  result.weights = lintime::io::load_safetensors((run / "checkpoint" / "model.safetensors").string());
  std::ifstream metrics(run / "metrics.jsonl");
  std::string line;
  std::getline(metrics, line);
  result.loss = nlohmann::json::parse(line).at("loss").get<double>();
  fs::remove_all(run);
  return result;
}

double update_error(const StepResult& actual, const StepResult& reference, const StepResult& initial) {
  double difference = 0, size = 0;
  for (const auto& [name, weight] : reference.weights) {
    const at::Tensor expected = weight.to(at::kDouble) - initial.weights.at(name).to(at::kDouble);
    const at::Tensor got = actual.weights.at(name).to(at::kDouble) - initial.weights.at(name).to(at::kDouble);
    difference += (got - expected).pow(2).sum().item<double>();
    size += expected.pow(2).sum().item<double>();
  }
  return std::sqrt(difference / size);
}

// The weights the trainer starts from: the config's model built from train.seed 0.
StepResult initial_weights() {
  auto model = lintime::models::build_causal_lm(lintime::testing::tiny_gsa_config(lintime::testing::kLmTestVocab), 0, "test");
  StepResult result;
  for (const auto& [name, parameter] : model->module().named_parameters()) result.weights[name] = parameter.detach().clone();
  return result;
}

TEST(LmTrainingCuda, HalfPrecisionStepsFollowTheFloat64Step) {
  LINTIME_SKIP_WITHOUT_CUDA();
  const fs::path shards = fresh_dir("cuda-shards");
  lintime::testing::write_shards(shards, lintime::testing::random_documents(200, 5),
                                 lintime::testing::random_documents(20, 6), lintime::testing::kLmTestEos,
                                 lintime::testing::kLmTestVocab);
  const StepResult initial = initial_weights();
  const StepResult reference = one_step(shards, "fp64", "cpu");
  for (const std::string precision : {"bf16", "fp16"}) {
    SCOPED_TRACE(precision);
    const StepResult gpu = one_step(shards, precision, "cuda");
    const StepResult cpu = one_step(shards, precision, "cpu");
    const double gpu_update = update_error(gpu, reference, initial), cpu_update = update_error(cpu, reference, initial);
    const double gpu_loss = std::abs(gpu.loss - reference.loss), cpu_loss = std::abs(cpu.loss - reference.loss);
    std::printf("%s: update error %.3e (CPU in dtype %.3e); loss %.6f vs float64 %.6f (CPU in dtype %.6f)\n",
                precision.c_str(), gpu_update, cpu_update, gpu.loss, reference.loss, cpu.loss);
    EXPECT_LE(gpu_update, 2 * cpu_update) << precision;
    // The loss's error is one number, as likely to land near 0 on the CPU as not: the rule then
    // takes the dtype's rounding of the loss itself (2^-8 relative for bf16) as its floor.
    const double rounding = precision == "bf16" ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
    EXPECT_LE(gpu_loss, std::max(2 * cpu_loss, rounding * reference.loss)) << precision;
  }
  fs::remove_all(shards);
}

}  // namespace
