// `lintime bench generate` (see the header). Each run: a random prompt [B, P] is prefilled
// (chunked ops / SDPA; after an untimed warm-up of the same shape unless --warmup false), the first
// token taken greedily (time to first token), then N − 1 decode
// steps each feed the argmax back on the device (no host round trip per step). Peak memory is
// the device allocator's peak over the run (CUDA); state bytes are the live decoding state at
// the end (GSA's fixed-size states; the Transformer's KV cache as allocated); on the CPU the
// growth of the process's resident memory over the run is recorded too.
#include "tools/cli/bench_generation.h"
#include "tools/cli/validators.h"

#include "core/device.h"
#include "core/error.h"
#include "infer/decode_steps.h"
#include "layers/module.h"
#include "models/architecture.h"
#include "models/causal_lm.h"
#include "models/gla_model.h"
#include "models/gsa_model.h"
#include "models/llama_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <nlohmann/json.hpp>

#if LINTIME_WITH_CUDA
#include <cuda_profiler_api.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <unistd.h>

namespace lintime::cli {
namespace {

models::GsaConfig gsa_preset(const std::string& preset) {
  models::GsaConfig config;  // fla's defaults: the 1.3B shape (d 2048, 24 layers, 4 heads, 64 slots)
  if (preset == "tiny") {
    config.vocab_size = 512;
    config.hidden_size = 128;
    config.num_hidden_layers = 2;
    config.num_slots = 16;
  }
  config.validate();
  return config;
}

// The Transformer++ of the same width: Llama layout, 128-dim heads, the same SwiGLU width.
models::LlamaConfig llama_preset(const std::string& preset) {
  const models::GsaConfig gsa = gsa_preset(preset);
  models::LlamaConfig config;
  config.vocab_size = gsa.vocab_size;
  config.hidden_size = gsa.hidden_size;
  config.num_hidden_layers = gsa.num_hidden_layers;
  config.intermediate_size = gsa.resolved_intermediate_size();
  config.num_attention_heads = preset == "tiny" ? 4 : gsa.hidden_size / 128;
  config.num_key_value_heads = config.num_attention_heads;
  config.max_position_embeddings = 1 << 20;
  config.validate();
  return config;
}

// fla's GLA at the same width (fla's GLAConfig defaults: d 2048, 24 layers, 4 heads, key dim d / 2).
models::GlaConfig gla_preset(const std::string& preset) {
  const models::GsaConfig gsa = gsa_preset(preset);
  models::GlaConfig config;
  config.vocab_size = gsa.vocab_size;
  config.hidden_size = gsa.hidden_size;
  config.num_hidden_layers = gsa.num_hidden_layers;
  config.validate();
  return config;
}

// The config.json of each arch's preset model, by --arch name.
const std::map<std::string, nlohmann::json (*)(const std::string&)>& presets() {
  static const std::map<std::string, nlohmann::json (*)(const std::string&)> table = {
      {"gsa", [](const std::string& preset) { return gsa_preset(preset).to_json(); }},
      {"gla", [](const std::string& preset) { return gla_preset(preset).to_json(); }},
      {"llama", [](const std::string& preset) { return llama_preset(preset).to_json(); }},
  };
  return table;
}


// A model of the preset with N(0, 0.02) weights and unit norms, allocated in place on the device
// by its architecture's entry.
std::unique_ptr<models::CausalLm> random_model(const std::string& arch, const std::string& preset,
                                               at::ScalarType dtype, const c10::Device& device, uint64_t seed) {
  const nlohmann::json config = preset_config(arch, preset);
  auto model = models::architecture_of(config, "bench generate --arch " + arch).create(config, dtype, device);
  at::manual_seed(seed);
  at::NoGradGuard no_grad;
  model->module().for_each_parameter([](const std::string& name, at::Tensor& p) {
    if (name.find("norm") != std::string::npos) p.fill_(1.0); else p.normal_(0.0, 0.02);
  });
  return model;
}

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) at::empty({1}, at::TensorOptions().device(device)).item<float>();  // waits for the stream
}

// The process's resident memory now, from /proc/self/statm (0 where unavailable).
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

// Opens / closes the range a profiler started with collection off records (no-op without CUDA).
void profiler_range(bool start) {
#if LINTIME_WITH_CUDA
  const cudaError_t status = start ? cudaProfilerStart() : cudaProfilerStop();
  LINTIME_CHECK(status == cudaSuccess, "bench generate: cudaProfiler", start ? "Start" : "Stop", " failed");
#else
  (void)start;
#endif
}

c10::DeviceAllocator* device_allocator(const c10::Device& device) {
  return device.is_cuda() ? c10::getDeviceAllocator(c10::kCUDA) : nullptr;
}

}  // namespace

nlohmann::json preset_config(const std::string& arch, const std::string& preset) { return presets().at(arch)(preset); }

void add_generation_bench_options(CLI::App& command, GenerationBenchOptions& options) {
  command.add_option("--arch", options.archs, "generate: gsa, gla and/or llama (the Transformer++ baseline)")
      ->delimiter(',')
      ->check(CLI::IsMember([] {
        std::vector<std::string> names;
        for (const auto& [name, preset] : presets()) names.push_back(name);
        return names;
      }()));
  command.add_option("--preset", options.preset, "generate: 1.3b (fla's GSA 1.3B shape) or tiny")
      ->check(CLI::IsMember({"1.3b", "tiny"}));
  command.add_option("--batches", options.batches, "generate: batch sizes (comma-separated)")
      ->delimiter(',')
      ->check(integer_in(1, kMaxBatch));
  command.add_option("--prompt-length", options.prompt_length, "generate: prompt tokens")
      ->check(integer_in(1, kMaxTokens));
  command.add_option("--new-tokens", options.new_tokens, "generate: generated tokens per sequence (comma-separated)")
      ->delimiter(',')
      ->check(integer_in(1, kMaxTokens));
  command.add_option("--dtype", options.dtype, "generate: float32, bfloat16 or float16");
  command.add_option("--seed", options.seed, "generate: seed of the weights and prompts")->check(integer_in(0, kAnySeed));
  command.add_option("--profile-steps", options.profile_steps,
                     "generate: mark the last N decode steps of each run for a profiler started with "
                     "collection off (ncu --profile-from-start off; dev/generation/profile_step.sh)")
      ->check(integer_in(0, int64_t{1} << 30));
  command.add_option("--warmup", options.warmup,
                     "generate: run an untimed prefill of the same prompt shape and one decode step before "
                     "each timed run, so that the time to first token leaves out first-use costs (kernel "
                     "loading, library handles, attention plans) (true/false)")
      ->check(boolean_text());
  command.add_option("--cuda-graphs", options.cuda_graphs,
                     "generate: replay decode steps as CUDA graphs where the model allows it (true/false)")
      ->check(boolean_text());
}

int run_generation_bench(const GenerationBenchOptions& options, const std::string& device_name,
                         const std::string& jsonl) {
  const c10::Device device = resolve_device(device_name);  // an indexed device, for the allocator's stats
  const at::ScalarType dtype = parse_dtype(options.dtype);
  std::ofstream jsonl_file;
  if (!jsonl.empty()) {
    jsonl_file.open(jsonl, std::ios::app);
    LINTIME_CHECK(jsonl_file.good(), "bench generate: cannot open '", jsonl, "' for appending");
  }
  at::NoGradGuard no_grad;
  std::printf("%-8s %6s %7s %7s %10s %14s %14s %12s %14s\n", "arch", "batch", "prompt", "new", "ttft ms",
              "decode tok/s", "overall tok/s", "peak GiB", "state KiB");
  for (const std::string& arch : options.archs) {
    auto model = random_model(arch, options.preset, dtype, device, options.seed);
    infer::DecodeSteps steps(*model, device.is_cuda() && options.cuda_graphs);
    const bool cuda_graphs = steps.graphed();
    for (int64_t batch : options.batches) {
      for (int64_t new_tokens : options.new_tokens) {
        std::fprintf(stderr, "bench generate: %s batch %lld, prompt %lld, %lld new tokens ...\n", arch.c_str(),
                     static_cast<long long>(batch), static_cast<long long>(options.prompt_length),
                     static_cast<long long>(new_tokens));
        nlohmann::json line = {{"bench", "generate"}, {"arch", arch}, {"model", model->name()},
                               {"preset", options.preset}, {"batch", batch}, {"prompt_length", options.prompt_length},
                               {"new_tokens", new_tokens}, {"dtype", options.dtype}, {"device", device_name},
                               {"cuda_graphs", cuda_graphs}, {"warmup", options.warmup}};
        auto* allocator = device_allocator(device);
        try {
          at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed + 1);
          const at::Tensor prompt =
              at::randint(0, model->vocab_size(), {batch, options.prompt_length}, generator, at::kLong).to(device);
          if (options.warmup) {  // the same kernels and shapes as the timed prefill, a state for one more token
            steps.step(steps.prefill(prompt, options.prompt_length + 1).argmax(-1));
            steps.prefill(prompt.narrow(1, 0, 1), 1);  // release its state
          }
          synchronize(device);
          if (allocator) {
            allocator->emptyCache();
            allocator->resetPeakStats(device.index());
          }
          const int64_t resident_before = resident_bytes();
          const auto start = std::chrono::steady_clock::now();
          at::Tensor next = steps.prefill(prompt, options.prompt_length + new_tokens).argmax(-1);
          synchronize(device);
          const auto first = std::chrono::steady_clock::now();
          const int64_t first_profiled = device.is_cuda() && options.profile_steps > 0
                                             ? std::max<int64_t>(1, new_tokens - options.profile_steps)
                                             : new_tokens;
          for (int64_t step = 1; step < new_tokens; ++step) {
            if (step == first_profiled) profiler_range(true);
            next = steps.step(next).argmax(-1);
          }
          if (first_profiled < new_tokens) profiler_range(false);
          const auto enqueued = std::chrono::steady_clock::now();  // the host is done; the GPU may not be
          synchronize(device);
          const auto end = std::chrono::steady_clock::now();
          const double ttft = std::chrono::duration<double>(first - start).count();
          const double decode = std::chrono::duration<double>(end - first).count();
          line["ttft_ms"] = 1e3 * ttft;
          line["decode_tokens_per_s"] = new_tokens > 1 ? batch * (new_tokens - 1) / decode : 0.0;
          line["overall_tokens_per_s"] = batch * new_tokens / (ttft + decode);
          // Host time per decode step: when it is close to the step time, launches bound the step.
          if (new_tokens > 1) {
            line["host_ms_per_step"] = 1e3 * std::chrono::duration<double>(enqueued - first).count() / (new_tokens - 1);
            line["ms_per_step"] = 1e3 * decode / (new_tokens - 1);
          }
          line["state_bytes"] = model->state_bytes_in_use();
          if (device.is_cpu()) line["resident_growth_bytes"] = resident_bytes() - resident_before;
          if (allocator) {
            line["peak_allocated_bytes"] =
                allocator->getDeviceStats(device.index()).allocated_bytes[0].peak;  // aggregate pool
          }
          steps.prefill(prompt.narrow(1, 0, 1), 1);  // release the large state before the next run
        } catch (const c10::OutOfMemoryError& error) {
          line["error"] = "out of memory";
          std::fprintf(stderr, "bench generate: %s batch %lld: out of memory\n", arch.c_str(),
                       static_cast<long long>(batch));
          steps.prefill(at::zeros({1, 1}, at::TensorOptions().dtype(at::kLong).device(device)), 1);
        }
        std::cout << line.dump() << "\n";
        if (jsonl_file.is_open()) jsonl_file << line.dump() << std::endl;
        if (line.contains("error")) {
          std::printf("%-8s %6lld %7lld %7lld %s\n", arch.c_str(), static_cast<long long>(batch),
                      static_cast<long long>(options.prompt_length), static_cast<long long>(new_tokens),
                      "out of memory");
          continue;
        }
        const double peak = line.contains("peak_allocated_bytes") ? line["peak_allocated_bytes"].get<double>() : 0.0;
        std::printf("%-8s %6lld %7lld %7lld %10.1f %14.0f %14.0f %12s %14.1f\n", arch.c_str(),
                    static_cast<long long>(batch), static_cast<long long>(options.prompt_length),
                    static_cast<long long>(new_tokens), line["ttft_ms"].get<double>(),
                    line["decode_tokens_per_s"].get<double>(), line["overall_tokens_per_s"].get<double>(),
                    peak > 0 ? std::to_string(peak / (1 << 30)).substr(0, 6).c_str() : "-",
                    line["state_bytes"].get<double>() / 1024);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace lintime::cli
