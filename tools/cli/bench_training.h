// `lintime bench train`: training throughput and peak memory of the preset language models on
// random tokens, through the trainer as `lintime train` runs it (see bench_training.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lintime::cli {

struct TrainingBenchOptions {
  std::vector<std::string> shapes = {"8x2048", "2x8192"};  // rows x tokens per step (16K tokens each)
  int64_t steps = 8;                                        // untimed, then as many timed
  std::string precision = "auto";
  int64_t activation_checkpointing = 0;
  bool master_weights = true;   // false: bf16 weights and moments, as the Hugging Face / fla anchors train
  bool fp32_moments = false;    // with master_weights false: fp32 moments on the bf16 weights
  int64_t profile_kernels = 0;  // > 0: the N kernels with the most device time per step, and a JSON line
  // `bench mqar`: the MQAR config trained, and the CUDA-graph settings compared (train --cuda-graph).
  std::string mqar_config = "configs/mqar/gsa-paper-d128.toml";
  std::vector<std::string> cuda_graph = {"off", "on"};
  std::vector<std::string> overrides;  // mqar: --set key=value on the config (e.g. train.precision=bf16)
};

void add_training_bench_options(CLI::App& command, TrainingBenchOptions& options);
// One JSON line per (arch, shape) to stdout and to `jsonl` (when not empty), and a table.
// `lintime bench mqar`: MQAR training steps per second (and, with --profile-kernels, the GPU's
// busy time per step) for each --cuda-graph setting, through the trainer as `lintime train`.
int run_mqar_training_bench(const TrainingBenchOptions& options, const std::string& device, const std::string& jsonl);
int run_training_bench(const TrainingBenchOptions& options, const std::vector<std::string>& archs,
                       const std::string& preset, const std::string& device, const std::string& jsonl);

}  // namespace lintime::cli
