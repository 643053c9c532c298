// `lintime bench train`: language-model training throughput and peak memory of the preset
// models (fla's GSA 1.3B shape and the same-width Transformer++ or GLA, or tiny ones), through
// the trainer exactly as `lintime train` runs it (bf16 with fp32 master weights, fused AdamW,
// the chunked cross-entropy) on random tokens: --steps untimed steps, then --steps timed ones,
// for each rows × tokens shape. No checkpoint is written. bench/train_hf.py measures Hugging
// Face's Llama (and fla's GSA) at the same shapes as the anchor.
#include "tools/cli/bench_training.h"

#include "core/device.h"
#include "core/error.h"
#include "core/kernel_profile.h"
#include "io/token_shards.h"
#include "tools/cli/bench_generation.h"
#include "tools/cli/validators.h"
#include "train/lm_trainer.h"
#include "train/mqar_trainer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <fstream>
#include <random>
#include <unistd.h>

namespace lintime::cli {
namespace fs = std::filesystem;
namespace {

// A train and a val split of uniformly random ids in [0, vocab): one document per split.
void write_random_shards(const fs::path& dir, int64_t vocab, int64_t tokens, int64_t val_tokens) {
  io::TokenManifest manifest;
  manifest.tokenizer = {"random ids", vocab, "0", ""};
  manifest.eos_id = vocab - 1;
  manifest.dtype = io::token_dtype_for_vocab(vocab);
  std::mt19937_64 random(0);
  for (const auto& [split, count] : {std::pair<const char*, int64_t>{"train", tokens}, {"val", val_tokens}}) {
    std::vector<int64_t> document(static_cast<size_t>(count));
    for (auto& token : document) token = static_cast<int64_t>(random() % static_cast<uint64_t>(vocab));
    io::TokenShardWriter writer(dir.string(), split, manifest.dtype, int64_t{1} << 27);
    writer.add_document(document);
    manifest.splits[split] = writer.finish();
  }
  io::write_token_manifest(dir.string(), manifest);
}

// "8x2048" -> (8, 2048): two decimal integers and nothing else, rows x tokens at most 2^24 tokens.
std::pair<int64_t, int64_t> parse_shape(const std::string& text) {
  const auto digits = [](const std::string& part) {
    return !part.empty() && part.size() <= 9 && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const size_t x = text.find('x');
  const std::string rows_text = x == std::string::npos ? "" : text.substr(0, x);
  const std::string tokens_text = x == std::string::npos ? "" : text.substr(x + 1);
  LINTIME_CHECK(digits(rows_text) && digits(tokens_text), "bench train: --shapes takes ROWSxTOKENS (e.g. 8x2048), got '",
                text, "'");
  const int64_t rows = std::stoll(rows_text), tokens = std::stoll(tokens_text);
  LINTIME_CHECK(rows >= 1 && tokens >= 1 && rows * tokens <= (int64_t{1} << 24), "bench train: --shapes '", text,
                "': expected rows and tokens >= 1, at most 16777216 tokens per step");
  return {rows, tokens};
}

// Removes a bench's scratch folder however the bench ends.
struct ScratchFolder {
  fs::path path;
  explicit ScratchFolder(fs::path where) : path(std::move(where)) { fs::remove_all(path); }
  ~ScratchFolder() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

// The kernels with the most device time per step (over the `steps` profiled steps), as a
// table and one JSON line.
void print_kernel_profile(const std::vector<KernelTime>& kernels, int64_t steps, int64_t top,
                          const nlohmann::json& run, std::ofstream& jsonl_file) {
  double all_ms = 0;
  for (const KernelTime& kernel : kernels) all_ms += kernel.total_ms;
  std::printf("device time per step %.2f ms in %zu kernel names; the top %lld:\n", all_ms / steps, kernels.size(),
              static_cast<long long>(top));
  nlohmann::json listed = nlohmann::json::array();
  for (size_t i = 0; i < kernels.size() && static_cast<int64_t>(i) < top; ++i) {
    const KernelTime& kernel = kernels[i];
    const double per_step = kernel.total_ms / steps;
    std::printf("  %8.3f ms %5.1f%% %6.1f calls  %.110s\n", per_step, 100 * kernel.total_ms / all_ms,
                static_cast<double>(kernel.calls) / steps, kernel.name.c_str());
    listed.push_back({{"name", kernel.name}, {"ms_per_step", per_step},
                      {"calls_per_step", static_cast<double>(kernel.calls) / steps}});
  }
  const nlohmann::json line = {{"bench", "train_kernels"}, {"arch", run.at("arch")}, {"rows", run.at("rows")},
                               {"seq_len", run.at("seq_len")}, {"device", run.at("device")},
                               {"device_ms_per_step", all_ms / steps}, {"kernels", listed}};
  std::printf("%s\n", line.dump().c_str());
  if (jsonl_file.is_open()) jsonl_file << line.dump() << "\n" << std::flush;
}

// The kernel profile of the timed steps alone (not the model's upload or the warm-up): it starts
// after step `steps`'s log line and stops after step 2·steps's, both of which wait for the GPU
// (the loss is read).
struct TimedProfile {
  std::optional<KernelProfile> profile;
  std::vector<KernelTime> kernels;
};
std::function<void(int64_t)> profile_timed_steps(int64_t steps, TimedProfile& timed) {
  return [steps, &timed](int64_t step) {
    if (step == steps) timed.profile.emplace();
    if (step == 2 * steps && timed.profile) timed.kernels = timed.profile->stop();
  };
}

// The last training record of a run's metrics.jsonl: the timed steps' (log_every = steps).
nlohmann::json last_training_record(const fs::path& metrics_path) {
  nlohmann::json timed;
  std::ifstream metrics(metrics_path);
  for (std::string line; std::getline(metrics, line);) {
    const auto record = nlohmann::json::parse(line);
    if (!record.contains("eval")) timed = record;
  }
  return timed;
}

}  // namespace

void add_training_bench_options(CLI::App& command, TrainingBenchOptions& options) {
  command.add_option("--shapes", options.shapes, "train: rows x tokens per step, e.g. 8x2048,2x8192")->delimiter(',');
  command.add_option("--steps", options.steps, "train: untimed steps, then as many timed ones")->check(integer_in(1, 1 << 20));
  command.add_option("--precision", options.precision, "train: bf16, fp16, fp32 (auto: bf16 on a GPU)")
      ->check(CLI::IsMember({"auto", "bf16", "fp16", "fp32"}));
  command.add_option("--activation-checkpointing", options.activation_checkpointing,
                     "train: checkpoint every k-th block (0: none)")
      ->check(integer_in(0, 1 << 16));
  command.add_option("--master-weights", options.master_weights,
                     "train: fp32 master weights and moments (true, default) or bf16 ones, as the anchors keep (false)")
      ->check(boolean_text());
  command.add_option("--mqar-config", options.mqar_config, "mqar: the MQAR training config (TOML)");
  command.add_option("--set", options.overrides, "mqar: override a config value: key=value (e.g. train.precision=bf16)");
  command.add_option("--cuda-graph", options.cuda_graph, "mqar: the CUDA-graph settings compared, e.g. off,on")
      ->delimiter(',')
      ->check(CLI::IsMember({"auto", "on", "off"}));
  command.add_option("--fp32-moments", options.fp32_moments,
                     "train: with --master-weights false, AdamW's moments in fp32 (12 bytes per parameter instead of 8)")
      ->check(boolean_text());
  command.add_option("--profile-kernels", options.profile_kernels,
                     "train: also list the N kernels with the most device time per step (Kineto; the timed steps profiled)")
      ->check(integer_in(0, 1 << 20));
}

int run_mqar_training_bench(const TrainingBenchOptions& options, const std::string& device, const std::string& jsonl) {
  std::ofstream jsonl_file;
  if (!jsonl.empty()) {
    jsonl_file.open(jsonl, std::ios::app);
    LINTIME_CHECK(jsonl_file.good(), "bench mqar: cannot open '", jsonl, "' for appending");
  }
  LINTIME_CHECK(fs::exists(options.mqar_config), "bench mqar: config file '", options.mqar_config,
                "' does not exist (expected an MQAR training TOML such as configs/mqar/gsa-paper-d128.toml)");
  // --steps untimed steps (the recordings happen there), then --steps timed ones; no
  // evaluation or checkpoint inside the stretch.
  std::vector<std::string> overrides = options.overrides;
  overrides.insert(overrides.end(), {
      "train.lr_sweep=[]", "train.max_steps=" + std::to_string(2 * options.steps),
      "train.log_every=" + std::to_string(options.steps), "train.eval_every=" + std::to_string(4 * options.steps),
      "train.warmup_steps=0"});
  const train::MqarTrainConfig config = train::load_mqar_train_config(options.mqar_config, overrides);
  LINTIME_CHECK(options.profile_kernels == 0 || resolve_device(device).is_cuda(),
                "--profile-kernels: lists the GPU's kernels; the device is ", resolve_device(device).str());
  for (const std::string& cuda_graph : options.cuda_graph) {  // before the first setting runs
    LINTIME_CHECK(cuda_graph != "on" || resolve_device(device).is_cuda(),
                  "bench mqar: --cuda-graph on: cannot record this run's steps: the device is ", device, ", not a GPU");
  }
  const ScratchFolder scratch_folder(fs::temp_directory_path() / ("lintime-bench-mqar-" + std::to_string(::getpid())));
  const fs::path& scratch = scratch_folder.path;
  std::printf("%-28s %-10s %10s %12s %10s %10s %14s\n", "config", "cuda graph", "steps/s", "tokens/s", "step ms",
              "peak GiB", "device ms/step");
  for (const std::string& cuda_graph : options.cuda_graph) {
    fs::remove_all(scratch);
    train::MqarTrainOptions run;
    run.out_dir = scratch.string();
    run.device = device;
    run.save_checkpoints = false;
    run.cuda_graph = cuda_graph;
    TimedProfile watched;
    if (options.profile_kernels > 0) run.after_step = profile_timed_steps(options.steps, watched);
    const auto result = train::train_mqar(config, run);
    const nlohmann::json timed = last_training_record(scratch / "metrics.jsonl");
    const std::optional<KernelProfile>& profile = watched.profile;
    const std::vector<KernelTime>& kernels = watched.kernels;
    double device_ms = 0;
    for (const KernelTime& kernel : kernels) device_ms += kernel.total_ms / static_cast<double>(options.steps);
    const double step_s = timed.at("step_time_s").get<double>();
    nlohmann::json line = {{"bench", "mqar_train"}, {"config", options.mqar_config}, {"cuda_graph", cuda_graph},
                           {"precision", config.optim.precision},
                           {"timed_steps", options.steps}, {"parameters", result.parameters},
                           {"batch", config.optim.batch_size}, {"device", result.device},
                           {"steps_per_s", step_s > 0 ? 1.0 / step_s : 0.0}, {"step_time_s", step_s},
                           {"tokens_per_s", timed.at("tokens_per_s")},
                           {"peak_memory_bytes", timed.at("peak_memory_bytes")}, {"loss", timed.at("loss")}};
    if (profile) line["device_ms_per_step"] = device_ms, line["device_busy_fraction"] = device_ms / (1e3 * step_s);
    std::printf("%-28s %-10s %10.1f %12.0f %10.2f %10.2f %14s\n",
                (fs::path(options.mqar_config).filename().string() + " " + config.optim.precision).c_str(),
                cuda_graph.c_str(),
                line["steps_per_s"].get<double>(), line["tokens_per_s"].get<double>(), 1e3 * step_s,
                line["peak_memory_bytes"].get<double>() / (1 << 30),
                profile ? std::to_string(device_ms).c_str() : "-");
    std::printf("%s\n", line.dump().c_str());
    std::fflush(stdout);
    if (jsonl_file.is_open()) jsonl_file << line.dump() << "\n" << std::flush;
    if (profile) {
      const nlohmann::json described = {{"arch", "mqar " + config.optim.precision + " " + cuda_graph}, {"rows", config.optim.batch_size},
                                        {"seq_len", config.data.train_segments.front().input_seq_len},
                                        {"device", result.device}};
      print_kernel_profile(kernels, options.steps, options.profile_kernels, described, jsonl_file);
    }
  }
  return 0;
}

int run_training_bench(const TrainingBenchOptions& options, const std::vector<std::string>& archs,
                       const std::string& preset, const std::string& device, const std::string& jsonl) {
  std::ofstream jsonl_file;
  if (!jsonl.empty()) {
    jsonl_file.open(jsonl, std::ios::app);
    LINTIME_CHECK(jsonl_file.good(), "bench train: cannot open '", jsonl, "' for appending");
  }
  LINTIME_CHECK(options.profile_kernels == 0 || resolve_device(device).is_cuda(),
                "--profile-kernels: lists the GPU's kernels; the device is ", resolve_device(device).str());
  std::vector<std::pair<int64_t, int64_t>> shapes;  // every one checked before the first runs
  for (const std::string& shape_text : options.shapes) shapes.push_back(parse_shape(shape_text));
  const ScratchFolder scratch_folder(fs::temp_directory_path() / ("lintime-bench-train-" + std::to_string(::getpid())));
  const fs::path& scratch = scratch_folder.path;
  std::printf("%-7s %6s %7s %12s %10s %10s %14s\n", "arch", "rows", "tokens", "tokens/s", "step ms", "peak GiB",
              "model TFLOP/s");
  for (const std::string& arch : archs) {
    const nlohmann::json model = preset_config(arch, preset);
    const int64_t vocab = model.at("vocab_size").get<int64_t>();
    for (const auto& [rows, tokens] : shapes) {
      const fs::path shards = scratch / "shards", run = scratch / "run";
      fs::remove_all(scratch);
      // Validation takes whole rows of seq_len + 1 tokens: at least two of them.
      const int64_t train_tokens = rows * (tokens + 1) * 4;
      write_random_shards(shards, vocab, train_tokens, std::max(train_tokens / 8 + 2, 2 * (tokens + 1)));
      const nlohmann::json document = {
          {"task", "lm"},
          {"model", {{"config", model}}},
          {"data", {{"shards", shards.string()}, {"seq_len", tokens}, {"document_boundaries", false}}},
          {"train",
           {{"batch_tokens", rows * tokens}, {"micro_batch_rows", rows}, {"max_steps", 2 * options.steps},
            {"log_every", options.steps}, {"eval_every", 2 * options.steps}, {"eval_tokens", tokens},
            {"precision", options.precision}, {"activation_checkpointing", options.activation_checkpointing},
            {"warmup_steps", 0}, {"lr", 1e-4}, {"master_weights", options.master_weights},
            {"fp32_moments", options.fp32_moments}}}};
      train::LmTrainOptions run_options;
      run_options.out_dir = run.string();
      run_options.device = device;
      run_options.save_checkpoints = false;
      TimedProfile watched;
      if (options.profile_kernels > 0) run_options.after_step = profile_timed_steps(options.steps, watched);
      const auto result = train::train_lm(train::LmTrainConfig::from_document(document), run_options);
      const nlohmann::json timed = last_training_record(run / "metrics.jsonl");
      const std::optional<KernelProfile>& profile = watched.profile;
      const std::vector<KernelTime>& kernels = watched.kernels;
      nlohmann::json line = {{"bench", "train"}, {"arch", arch}, {"preset", preset}, {"rows", rows},
                             {"seq_len", tokens}, {"precision", result.precision},
                             {"activation_checkpointing", options.activation_checkpointing},
                             {"master_weights", options.master_weights}, {"fp32_moments", options.fp32_moments},
                             {"timed_steps", options.steps}, {"parameters", result.parameters},
                             {"device", result.device}, {"tokens_per_s", timed.at("tokens_per_s")},
                             {"step_time_s", timed.at("step_time_s")},
                             {"peak_memory_bytes", timed.at("peak_memory_bytes")},
                             {"model_flops_per_s", timed.value("model_flops_per_s", 0.0)}, {"loss", timed.at("loss")}};
      std::printf("%-7s %6lld %7lld %12.0f %10.2f %10.2f %14.1f\n", arch.c_str(), static_cast<long long>(rows),
                  static_cast<long long>(tokens), line["tokens_per_s"].get<double>(),
                  1e3 * line["step_time_s"].get<double>(), line["peak_memory_bytes"].get<double>() / (1 << 30),
                  line["model_flops_per_s"].get<double>() / 1e12);
      std::printf("%s\n", line.dump().c_str());
      std::fflush(stdout);
      if (jsonl_file.is_open()) jsonl_file << line.dump() << "\n" << std::flush;
      if (profile) print_kernel_profile(kernels, options.steps, options.profile_kernels, line, jsonl_file);
    }
  }
  return 0;
}

}  // namespace lintime::cli
