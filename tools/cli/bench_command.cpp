// `lintime bench gsa`: forward and forward+backward throughput of the chunked GSA op against
// the reference recurrence, same inputs, same run. Writes one JSON line per measurement
// (stdout or --jsonl FILE) and a table. A benchmark, not a test: no pass/fail on speed.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/error.h"
#include "ops/register/ops.h"
#include "tools/cli/bench_generation.h"
#include "tools/cli/bench_training.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sys/utsname.h>

namespace lintime::cli {
namespace {

struct BenchShape {
  int64_t batch, seq_len, heads, key_dim, value_dim, slots;
};

struct Inputs {
  at::Tensor q, k, v, s, g;
};

Inputs make_inputs(const BenchShape& shape, at::ScalarType dtype, const at::Device& device) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(1234);
  auto options = at::TensorOptions().dtype(at::kFloat);
  auto randn = [&](std::vector<int64_t> sizes) {
    return at::normal(0.0, 1.0, sizes, generator, options).to(device, dtype);
  };
  const auto& s = shape;
  Inputs inputs;
  inputs.q = randn({s.batch, s.seq_len, s.heads, s.key_dim});
  inputs.k = randn({s.batch, s.seq_len, s.heads, s.key_dim});
  inputs.v = randn({s.batch, s.seq_len, s.heads, s.value_dim});
  // The layer's gates: g = logsigmoid(f) / 8, s = 1 - exp(g).
  auto f = at::normal(0.0, 1.0, {s.batch, s.seq_len, s.heads, s.slots}, generator, options);
  auto g = at::log_sigmoid(f) / 8.0;
  inputs.g = g.to(device, dtype);
  inputs.s = (1.0 - g.exp()).to(device, dtype);
  return inputs;
}

template <typename Fn>
double median_seconds(Fn&& fn, int repeats) {
  fn();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

std::string machine_name() {
  utsname name{};
  uname(&name);
  return std::string(name.nodename) + " (" + name.machine + ", " + std::to_string(at::get_num_threads()) + " threads)";
}

}  // namespace

std::function<int()> add_bench_command(CLI::App& app) {
  auto* command = app.add_subcommand("bench", "Benchmark lintime (JSON lines + table): gsa, the chunked GSA op; "
                                              "generate, text generation of GSA against a Transformer++; train, "
                                              "language-model training of the same models; mqar, "
                                              "MQAR training steps per second with and without CUDA graphs");
  struct Options {
    std::string what = "gsa";
    std::string device = "cpu";
    std::string jsonl;
    int64_t batch = 4, seq_len = 512, heads = 4, key_dim = 64, value_dim = 64, slots = 64;
    int repeats = 5;
    bool skip_reference = false;
  };
  auto options = std::make_shared<Options>();
  auto generation = std::make_shared<GenerationBenchOptions>();
  auto training = std::make_shared<TrainingBenchOptions>();
  command->add_option("what", options->what, "What to benchmark: gsa, generate, train or mqar")
      ->check(CLI::IsMember({"gsa", "generate", "train", "mqar"}));
  add_generation_bench_options(*command, *generation);
  add_training_bench_options(*command, *training);
  command->add_option("--device", options->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  command->add_option("--jsonl", options->jsonl, "Append JSON lines to this file");
  command->add_option("--batch", options->batch, "B")->check(integer_in(1, kMaxBatch));
  command->add_option("--seq-len", options->seq_len, "T")->check(integer_in(1, kMaxTokens));
  command->add_option("--heads", options->heads, "H")->check(integer_in(1, 1 << 16));
  command->add_option("--key-dim", options->key_dim, "K")->check(integer_in(1, 1 << 16));
  command->add_option("--value-dim", options->value_dim, "V")->check(integer_in(1, 1 << 16));
  command->add_option("--slots", options->slots, "M")->check(integer_in(1, 1 << 16));
  command->add_option("--repeats", options->repeats, "Timed repetitions (median reported)")->check(integer_in(1, 1 << 20));
  command->add_flag("--skip-reference", options->skip_reference, "Time only the chunked op");
  return [options, generation, training]() {
    if (options->what == "generate") return run_generation_bench(*generation, options->device, options->jsonl);
    if (options->what == "mqar") return run_mqar_training_bench(*training, options->device, options->jsonl);
    if (options->what == "train")
      return run_training_bench(*training, generation->archs, generation->preset, options->device, options->jsonl);
    const at::Device device(options->device == "cuda" ? at::kCUDA : at::kCPU);
    LINTIME_CHECK(device.is_cpu() || at::hasCUDA(), "bench: --device cuda but no CUDA device is available");
    const BenchShape shape{options->batch, options->seq_len, options->heads, options->key_dim,
                           options->value_dim, options->slots};
    const auto dtype = at::kFloat;
    auto inputs = make_inputs(shape, dtype, device);
    const double scale = 1.0 / std::sqrt(static_cast<double>(shape.key_dim));
    auto grad_o = at::randn({shape.batch, shape.seq_len, shape.heads, shape.value_dim},
                            at::TensorOptions().dtype(dtype).device(device));

    auto run = [&](bool reference, bool backward) {
      std::vector<at::Tensor> leaves = {inputs.q, inputs.k, inputs.v, inputs.s, inputs.g};
      for (auto& t : leaves) t = t.detach().set_requires_grad(backward);
      auto result = reference
                        ? ops::gsa_reference(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], scale)
                        : ops::gsa_chunk(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], scale);
      if (backward) result.o.backward(grad_o);
    };

    const double tokens = static_cast<double>(shape.batch * shape.seq_len);
    std::ofstream jsonl_file;
    if (!options->jsonl.empty()) {
      jsonl_file.open(options->jsonl, std::ios::app);
      LINTIME_CHECK(jsonl_file.good(), "bench: cannot open '", options->jsonl, "' for appending");
    }
    std::printf("%-22s %-6s %12s %14s %10s\n", "op", "pass", "ms", "tokens/s", "vs ref");
    for (bool backward : {false, true}) {
      double chunk_seconds = median_seconds([&] { run(false, backward); }, options->repeats);
      double reference_seconds = 0;
      if (!options->skip_reference)
        reference_seconds = median_seconds([&] { run(true, backward); }, std::max(1, options->repeats / 2));
      const char* pass = backward ? "fwd+bwd" : "fwd";
      for (bool reference : {true, false}) {
        if (reference && options->skip_reference) continue;
        const double seconds = reference ? reference_seconds : chunk_seconds;
        nlohmann::json line = {
            {"op", reference ? "gsa_reference" : "gsa_chunk"}, {"pass", pass},
            {"shape", {{"B", shape.batch}, {"T", shape.seq_len}, {"H", shape.heads}, {"K", shape.key_dim},
                       {"V", shape.value_dim}, {"M", shape.slots}}},
            {"dtype", "float32"}, {"device", options->device}, {"ms", seconds * 1e3},
            {"tokens_per_s", tokens / seconds}, {"machine", machine_name()}};
        if (!reference && reference_seconds > 0) line["speedup_vs_reference"] = reference_seconds / seconds;
        std::cout << line.dump() << "\n";
        if (jsonl_file.is_open()) jsonl_file << line.dump() << "\n";
        std::printf("%-22s %-6s %12.3f %14.0f %10s\n", reference ? "gsa_reference" : "gsa_chunk", pass,
                    seconds * 1e3, tokens / seconds,
                    (!reference && reference_seconds > 0)
                        ? (std::to_string(reference_seconds / seconds).substr(0, 6) + "x").c_str()
                        : "");
      }
    }
    return 0;
  };
}

}  // namespace lintime::cli
