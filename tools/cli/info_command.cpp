// `lintime info CONFIG|CHECKPOINT_DIR`: parameter count and recurrent state bytes per
// sequence of a training config (.toml: MQAR, or a language model's), a lintime checkpoint, or
// the config.json of any registered architecture (a file or a model folder holding one;
// models/architecture.h).
#include "tools/cli/commands.h"

#include "core/error.h"
#include "models/architecture.h"
#include "train/checkpoint.h"
#include "train/config_document.h"
#include "train/lm_config.h"
#include "train/mqar_config.h"
#include "train/sweep.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace lintime::cli {
namespace {
namespace fs = std::filesystem;

void print_mqar(const train::MqarTrainConfig& config) {
  std::printf("model: MQAR (mqar.md §2), d_model %lld, vocab %lld, layers:",
              static_cast<long long>(config.model.d_model), static_cast<long long>(config.model.vocab_size));
  for (const auto& layer : config.model.layers) std::printf(" %s", layer.c_str());
  std::printf("\nparameters: %lld\n", static_cast<long long>(config.model.parameter_count()));
  std::printf("recurrent state: %lld bytes per sequence\n",
              static_cast<long long>(config.model.state_bytes_per_sequence()));
}

// A sweep file: each (model, point)'s parameters and state bytes, once over its rates.
void print_sweep(const std::string& path) {
  const train::SweepPlan plan = train::load_sweep_plan(path);
  const auto runs = train::sweep_runs(plan);
  std::printf("sweep: %s (%zu runs: %zu rates each)\n", plan.title.c_str(), runs.size(), plan.lrs.size());
  std::printf("%-12s %-24s %12s %14s\n", "model", "point", "parameters", "state bytes");
  std::string last;
  for (const train::SweepRun& run : runs) {
    if (run.model + "/" + run.point_label == last) continue;
    last = run.model + "/" + run.point_label;
    const auto config = train::MqarTrainConfig::from_document(run.config);
    std::printf("%-12s %-24s %12lld %14lld\n", run.model.c_str(), run.point_label.c_str(),
                static_cast<long long>(config.model.parameter_count()),
                static_cast<long long>(config.model.state_bytes_per_sequence()));
  }
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  LINTIME_CHECK(in.good(), "info: cannot read '", path.string(), "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& error) {  // parse errors and number overflows alike
    fail("info: '", path.string(), "' is not valid JSON: ", error.what());
  }
}

}  // namespace

std::function<int()> add_info_command(CLI::App& app) {
  auto* command = app.add_subcommand("info", "Parameter count and state bytes of a config or checkpoint");
  auto target = std::make_shared<std::string>();
  command->add_option("CONFIG_OR_DIR", *target,
                      "A training config (.toml), a lintime checkpoint directory, or a GSA / GLA (fla), Llama / Mistral "
                      "(Hugging Face) or BASED (HazyResearch) config.json / model folder")
      ->required();
  return [target]() {
    fs::path path(*target);
    LINTIME_CHECK(fs::exists(path), "info: '", *target, "' does not exist (expected a .toml config, a config.json or a directory)");
    if (path.extension() == ".toml") {
      const nlohmann::json document = train::read_toml_file(path.string());
      if (document.contains("sweep")) {
        print_sweep(path.string());
      } else if (train::training_task_of(document, path.string()) == "lm") {
        const auto config = train::load_lm_train_config(path.string(), {});
        std::fputs(models::architecture_of(config.model.config, path.string()).describe(config.model.config).c_str(), stdout);
      } else {
        print_mqar(train::load_mqar_train_config(path.string(), {}));
      }
      return 0;
    }
    if (fs::is_directory(path)) {
      if (train::checkpoint_exists((path / "checkpoint").string())) path /= "checkpoint";
      if (train::checkpoint_exists(path.string())) {
        const auto run_config = train::read_trainer_state(path.string()).config;
        if (train::training_task_of(run_config, path.string()) != "lm") {  // a language model's is a model folder
          print_mqar(train::MqarTrainConfig::from_document(run_config));
          return 0;
        }
      }
      LINTIME_CHECK(fs::exists(path / "config.json"), "info: '", *target,
                    "' holds neither config.json nor a lintime checkpoint");
      path /= "config.json";
    }
    const auto json = read_json(path);
    LINTIME_CHECK(json.is_object(), "info: '", path.string(), "' must hold a JSON object");
    try {
      std::fputs(models::architecture_of(json, path.string()).describe(json).c_str(), stdout);
    } catch (const Error& error) {
      const std::string message = error.what();
      if (message.rfind("config key", 0) == 0) fail(path.string(), ": ", message);  // name the file
      throw;
    }
    return 0;
  };
}

}  // namespace lintime::cli
