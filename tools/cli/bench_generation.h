// `lintime bench generate`: text-generation throughput of GSA against the same-width
// Transformer++ (Llama layout, KV cache) — time to first token, decode tokens/s, peak device
// memory and the decoding state's bytes, per batch size and generated length. Random weights.
#pragma once

#include <nlohmann/json.hpp>

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lintime::cli {

struct GenerationBenchOptions {
  std::vector<std::string> archs = {"gsa", "llama"};  // gsa, gla, llama (Transformer++)
  std::string preset = "1.3b";                        // 1.3b: fla's GSA 1.3B shape; tiny: for CPU checks
  std::vector<int64_t> batches = {1, 64, 128};
  int64_t prompt_length = 2048;
  std::vector<int64_t> new_tokens = {1024};
  std::string dtype = "bfloat16";
  uint64_t seed = 0;
  bool cuda_graphs = true;  // decode steps replayed as CUDA graphs where the model allows (GSA)
  int64_t profile_steps = 0;  // > 0: the last N decode steps of each run between cudaProfilerStart/Stop
  bool warmup = true;  // an untimed prefill and decode step before each timed run (first-use costs)
};

void add_generation_bench_options(CLI::App& command, GenerationBenchOptions& options);
// The config.json of `arch`'s model in `preset` (1.3b: fla's GSA 1.3B shape and the same-width
// GLA and Transformer++; tiny).
nlohmann::json preset_config(const std::string& arch, const std::string& preset);
// Prints a table, writes one JSON line per run to stdout and `jsonl` (when not empty).
int run_generation_bench(const GenerationBenchOptions& options, const std::string& device_name,
                         const std::string& jsonl);

}  // namespace lintime::cli
