// `lintime train CONFIG.toml`: the config's task trains. "mqar" (the default): an MQAR model,
// then test accuracy per segment, the recurrent state size and wall time; with train.lr_sweep,
// one run per learning rate into OUT/lr-<value>/ and a summary with the best. "lm": a language
// model on token shards, then its validation loss and perplexity and where the checkpoint is.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/device.h"
#include "core/error.h"
#include "train/config_document.h"
#include "train/distributed.h"
#include "train/lm_trainer.h"
#include "train/mqar_trainer.h"

#include <ATen/Parallel.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

namespace lintime::cli {
namespace {

void print_result(const train::MqarTrainResult& result) {
  std::printf("\n%-34s %10s\n", "test segment", "accuracy");
  for (size_t i = 0; i < result.evaluation.segment_accuracy.size(); ++i)
    std::printf("%-34s %9.2f%%\n", result.evaluation.segment_names[i].c_str(),
                100.0 * result.evaluation.segment_accuracy[i]);
  std::printf("%-34s %9.2f%%\n", "overall", 100.0 * result.evaluation.accuracy);
  std::printf("recurrent state: %lld bytes per sequence\n", static_cast<long long>(result.state_bytes_per_sequence));
  std::printf("parameters: %lld\n", static_cast<long long>(result.parameters));
  std::printf("steps: %lld of %lld%s%s on %s, lr %g\n", static_cast<long long>(result.steps),
              static_cast<long long>(result.total_steps), result.reached_target ? " (target accuracy reached)" : "",
              result.stopped_early ? " (stopped by --stop-after-steps)" : "", result.device.c_str(), result.lr);
  std::printf("wall time: %.1f s\n", result.wall_seconds);
  std::fflush(stdout);
}

std::string lr_name(double lr) {
  std::ostringstream out;
  out << "lr-" << lr;
  return out.str();
}

// A run stopped by SIGINT or SIGTERM after writing its checkpoint: one line, exit status 130.
int report_interrupted(int64_t steps, const std::string& checkpoint_dir) {
  std::fprintf(stderr, "lintime train: interrupted after step %lld; checkpoint in %s (continue with --resume)\n",
               static_cast<long long>(steps), checkpoint_dir.c_str());
  return 130;
}

int train_language_model(const std::string& config_path, const std::vector<std::string>& overrides,
                         const std::string& out, const train::LmTrainOptions& base) {
  const auto config = train::load_lm_train_config(config_path, overrides);
  train::LmTrainOptions run = base;
  run.out_dir = out;
  std::printf("lintime train (language model): %s -> %s; %s from %s; %lld tokens per step in %lld micro-batches of %lld x %lld per rank\n",
              config_path.c_str(), out.c_str(), config.model.from.empty() ? "fresh weights" : "weights",
              config.model.from.empty() ? (config.model.config_path.empty() ? "an inline config" : config.model.config_path.c_str())
                                        : config.model.from.c_str(),
              static_cast<long long>(config.batch_tokens),
              static_cast<long long>(config.micro_batches() / (base.communicator ? base.communicator->world_size() : 1)),
              static_cast<long long>(config.micro_batch_rows), static_cast<long long>(config.data.seq_len));
  std::fflush(stdout);
  const auto result = train::train_lm(config, run);
  if (result.interrupted) return report_interrupted(result.steps, result.checkpoint_dir);
  std::printf("\nvalidation loss %.4f, perplexity %.2f (best loss %.4f)\n", result.val_loss, result.val_perplexity,
              result.best_val_loss);
  std::printf("parameters: %lld; steps: %lld of %lld on %s in %s; wall time %.1f s\n",
              static_cast<long long>(result.parameters), static_cast<long long>(result.steps),
              static_cast<long long>(result.total_steps), result.device.c_str(), result.precision.c_str(),
              result.wall_seconds);
  std::printf("model folder: %s\n", result.checkpoint_dir.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

std::function<int()> add_train_command(CLI::App& app) {
  auto* command = app.add_subcommand("train", "Train a model from a TOML config: MQAR, or a language model (task = \"lm\")");
  struct Options {
    std::string config;
    std::vector<std::string> overrides;
    std::string device = "auto";
    int64_t seed = -1;
    std::string out;
    bool resume = false;
    int64_t stop_after_steps = 0;
    int threads = 1;
    double bucket_mb = 25;
    double timeout_s = 600;
    std::string cuda_graph = "auto";
  };
  auto options = std::make_shared<Options>();
  command->add_option("CONFIG", options->config, "Training config (configs/mqar/*.toml, configs/lm/*.toml)")->required();
  command->add_option("--set", options->overrides, "Override a config value: key=value (e.g. train.lr=1e-3)");
  command->add_option("--device", options->device, "cpu, cuda or auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  command->add_option("--seed", options->seed, "Model initialisation seed (overrides train.seed)")->check(integer_in(0, std::numeric_limits<int64_t>::max()));
  command->add_option("--out", options->out, "Output directory (default runs/<config name>)")
      ->check(non_empty());
  command->add_flag("--resume", options->resume, "Continue the checkpoint in the output directory");
  command->add_option("--stop-after-steps", options->stop_after_steps,
                      "Stop after this many steps in total, leaving a resumable checkpoint")
      ->check(integer_in(1, int64_t{1} << 40));
  command->add_option("--threads", options->threads,
                      "CPU threads for ATen ops (0: torch's default). Default 1: on 2 cores the small MQAR "
                      "models ran 2x slower with 2 threads (thread spin-up dominates their small ops)")
      ->check(integer_in(0, kMaxThreads));
  command->add_option("--bucket-mb", options->bucket_mb,
                      "Distributed runs: MiB of gradients summed across ranks at once (default 25, as DDP)")
      ->check(positive_real());
  command->add_option("--timeout", options->timeout_s,
                      "Distributed runs: seconds a rank waits for the others (joining, every collective) "
                      "before it stops with an error naming the operation (default 600)")
      ->check(positive_real());
  command->add_option("--cuda-graph", options->cuda_graph,
                      "Record each training step as a CUDA graph and replay it: auto (where the run allows it: "
                      "MQAR on one GPU), on (an error says what prevents it), off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  return [options]() {
    if (options->threads > 0) at::set_num_threads(options->threads);
    LINTIME_CHECK(std::filesystem::exists(options->config), "train: config file '", options->config,
                  "' does not exist (expected a TOML file such as configs/mqar/gsa-small.toml)");
    auto overrides = options->overrides;
    if (options->seed >= 0) overrides.push_back("train.seed=" + std::to_string(options->seed));
    const std::string out = options->out.empty()
                                ? "runs/" + std::filesystem::path(options->config).stem().string()
                                : options->out;
    auto document = train::read_toml_file(options->config);
    train::apply_overrides(document, overrides);

    // Under torchrun (RANK, WORLD_SIZE, ...): one process group, rank r on GPU LOCAL_RANK.
    std::string device_name = options->device;
    std::unique_ptr<train::Communicator> communicator;
    if (const auto environment = train::launch_environment()) {
      const c10::Device device = train::rank_device(resolve_device(device_name), *environment);
      device_name = device.str();
      communicator = train::Communicator::join(*environment, device, std::chrono::milliseconds(
                                                                          static_cast<int64_t>(options->timeout_s * 1000)));
      if (!communicator->is_root()) std::freopen("/dev/null", "w", stdout);  // rank 0 reports
      std::printf("lintime train: rank %d of %d on %s\n", communicator->rank(), communicator->world_size(),
                  device_name.c_str());
    }
    // What every task's run takes from the command line.
    const auto common = [&](auto& run) {
      run.device = device_name;
      run.resume = options->resume;
      run.stop_after_steps = options->stop_after_steps;
      run.communicator = communicator.get();
      run.bucket_bytes = static_cast<int64_t>(options->bucket_mb * (1 << 20));
      run.cuda_graph = options->cuda_graph;
    };
    if (train::training_task_of(document, options->config) == "lm") {
      train::LmTrainOptions run;
      common(run);
      return train_language_model(options->config, overrides, out, run);
    }
    auto config = train::load_mqar_train_config(options->config, overrides);
    train::MqarTrainOptions run;
    common(run);
    std::printf("lintime train: %s -> %s (%lld parameters, %lld state bytes per sequence)\n",
                options->config.c_str(), out.c_str(), static_cast<long long>(config.model.parameter_count()),
                static_cast<long long>(config.model.state_bytes_per_sequence()));
    std::fflush(stdout);
    if (config.optim.lr_sweep.empty()) {
      run.out_dir = out;
      const auto result = train::train_mqar(config, run);
      if (result.interrupted) return report_interrupted(result.steps, result.checkpoint_dir);
      print_result(result);
      return 0;
    }
    double best = -1, best_lr = 0;
    std::vector<std::pair<double, double>> summary;
    for (double lr : config.optim.lr_sweep) {
      auto one = config;
      one.optim.lr = lr;
      one.optim.lr_sweep.clear();
      run.out_dir = (std::filesystem::path(out) / lr_name(lr)).string();
      std::printf("\n== learning rate %g ==\n", lr);
      auto result = train::train_mqar(one, run);
      if (result.interrupted) return report_interrupted(result.steps, result.checkpoint_dir);
      print_result(result);
      summary.emplace_back(lr, result.best_accuracy);
      if (result.best_accuracy > best) best = result.best_accuracy, best_lr = lr;
    }
    std::printf("\nlearning-rate sweep (best test accuracy per run):\n");
    for (auto [lr, accuracy] : summary) std::printf("  lr %-10g %7.2f%%%s\n", lr, 100 * accuracy, lr == best_lr ? "  <- best" : "");
    return 0;
  };
}

}  // namespace lintime::cli
