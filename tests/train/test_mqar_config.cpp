// Every shipped MQAR config parses and round-trips through the document form written into
// checkpoints; overrides and strict reading behave as the CLI documents.
#include "core/error.h"
#include "train/config_document.h"
#include "train/mqar_config.h"
#include "train/sweep.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace {
namespace fs = std::filesystem;
using lintime::train::MqarTrainConfig;

fs::path source_dir() {
  const char* dir = std::getenv("LINTIME_SOURCE_DIR");
  return dir ? fs::path(dir) : fs::current_path();
}

TEST(MqarConfig, EveryShippedConfigParsesAndRoundTrips) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(source_dir() / "configs" / "mqar")) {
    if (entry.path().extension() != ".toml") continue;
    SCOPED_TRACE(entry.path().string());
    if (lintime::train::read_toml_file(entry.path().string()).contains("sweep")) {
      // A sweep file: every run's config is checked as it loads (train/sweep.h).
      EXPECT_FALSE(lintime::train::sweep_runs(lintime::train::load_sweep_plan(entry.path().string())).empty());
      continue;
    }
    auto config = lintime::train::load_mqar_train_config(entry.path().string(), {});
    auto document = config.to_document();
    auto again = MqarTrainConfig::from_document(document);
    EXPECT_EQ(again.to_document(), document);
    EXPECT_GT(config.model.parameter_count(), 0);
    EXPECT_GT(config.model.state_bytes_per_sequence(), 0);
    ++count;
  }
  EXPECT_GE(count, 6);
}

TEST(MqarConfig, GsaPaperSettingMatchesThePaper) {
  auto config = lintime::train::load_mqar_train_config(
      (source_dir() / "configs" / "mqar" / "gsa-paper-d128.toml").string(), {});
  ASSERT_EQ(config.data.train_segments.size(), 1u);
  EXPECT_EQ(config.data.train_segments[0].input_seq_len, 512);
  EXPECT_EQ(config.data.train_segments[0].num_kv_pairs, 64);
  EXPECT_EQ(config.data.train_segments[0].num_examples, 100000);
  EXPECT_EQ(config.data.test_segments[0].num_examples, 3000);
  EXPECT_EQ(config.model.vocab_size, 8192);
  EXPECT_EQ(config.model.layers.size(), 4u);
  EXPECT_EQ(config.optim.batch_size, 128);
  // 4 layers × 4 heads × (K·M + M·V) fp32 numbers, K = V = 32, M = d/4 = 32: 2·M·d per layer.
  EXPECT_EQ(config.model.state_bytes_per_sequence(), 4 * 2 * 32 * 128 * 4);
}

TEST(MqarConfig, OverridesAreTypedAndStrict) {
  nlohmann::json document = {{"model", {{"d_model", 16}, {"layers", {"gla"}}}},
                             {"data", {{"vocab_size", 64},
                                       {"train", {{{"seq_len", 16}, {"kv_pairs", 2}, {"examples", 8}}}},
                                       {"test", {{{"seq_len", 16}, {"kv_pairs", 2}, {"examples", 8}}}}}},
                             {"train", nlohmann::json::object()}};
  lintime::train::apply_overrides(document, {"train.lr=0.5", "model.gla.num_heads=4", "train.schedule=constant"});
  auto config = MqarTrainConfig::from_document(document);
  EXPECT_DOUBLE_EQ(config.optim.lr, 0.5);
  EXPECT_EQ(config.optim.schedule, "constant");
  EXPECT_EQ(config.model.options_for("gla").at("num_heads"), 4);

  auto expect_error = [&](const std::vector<std::string>& overrides, const std::string& fragment) {
    auto copy = document;
    try {
      lintime::train::apply_overrides(copy, overrides);
      MqarTrainConfig::from_document(copy);
      ADD_FAILURE() << "expected an error containing '" << fragment << "'";
    } catch (const lintime::Error& error) {
      EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
    }
  };
  expect_error({"train.warmup=3"}, "config key \"train.warmup\": unknown, expected one of batch_size");
  expect_error({"train.batch_size=0"}, "config key \"train.batch_size\": must be >= 1, got 0");
  expect_error({"train.lr=\"fast\""}, "config key \"train.lr\": expected a number, got string \"fast\"");
  expect_error({"data.train=[{seq_len=16,kv_pairs=2}]"}, "config key \"data.train[0].examples\": missing, expected an integer");
  expect_error({"train.schedule=linear"}, "must be one of constant, warmup_cosine, epoch_cosine");
  expect_error({"optimizer.lr=1"}, "unknown table 'optimizer'");
  expect_error({"model.vocab_size=10"}, "data.vocab_size");
  expect_error({"noequals"}, "expected key=value");
  expect_error({"train.precision=fp8"}, "config key \"train.precision\": must be one of fp32");

  // bf16 compute is an option; fp32, the default, stays out of the document (older checkpoints'
  // configs stay equal to what this version writes).
  EXPECT_EQ(config.optim.precision, "fp32");
  EXPECT_FALSE(config.to_document().at("train").contains("precision"));
  auto bf16 = document;
  lintime::train::apply_overrides(bf16, {"train.precision=bf16"});
  const auto bf16_config = MqarTrainConfig::from_document(bf16);
  EXPECT_EQ(bf16_config.optim.precision, "bf16");
  EXPECT_EQ(MqarTrainConfig::from_document(bf16_config.to_document()).optim.precision, "bf16");
}

}  // namespace

namespace {

TEST(MqarSweep, RunFoldersStayInsideTheOutputFolderAndOverridesReachTheTable) {
  const fs::path file = fs::temp_directory_path() / ("lintime-sweep-names-" + std::to_string(::getpid()) + ".toml");
  std::ofstream(file) << "[sweep]\nd_model = [8]\nlr = [1e-2]\n"
                      << "[[sweep.models]]\nname = \"..\"\nmodel = { layers = [\"gla\"], gla = { num_heads = 2 } }\n"
                      << "[[sweep.models]]\nname = \".hidden/../x\"\nmodel = { layers = [\"gla\"], gla = { num_heads = 2 } }\n"
                      << "[data]\nvocab_size = 32\ntrain = [{ seq_len = 16, kv_pairs = 2, examples = 16 }]\n"
                      << "test = [{ seq_len = 16, kv_pairs = 2, examples = 8 }]\n[train]\nbatch_size = 8\n";
  const auto plan = lintime::train::load_sweep_plan(file.string(), {"model.gla.num_heads=4"});
  const auto runs = lintime::train::sweep_runs(plan);
  ASSERT_EQ(runs.size(), 2u);
  for (const auto& run : runs) {
    const fs::path dir(run.dir);
    EXPECT_FALSE(dir.is_absolute()) << run.dir;
    for (const auto& part : dir) EXPECT_TRUE(part != ".." && part != "." && part.string().front() != '.') << run.dir;
    EXPECT_EQ(run.config.at("model").at("gla").at("num_heads").get<int64_t>(), 4) << "the override is in the run";
  }
  EXPECT_EQ(runs[0].dir, "_./d8/lr-0.01");
  EXPECT_EQ(runs[1].dir, "_hidden_.._x/d8/lr-0.01");
  // The table counts the state of the runs as they train (with the override).
  const auto points = lintime::train::summarize_sweep(plan, (fs::temp_directory_path() / "none").string());
  const auto config = lintime::train::MqarTrainConfig::from_document(runs[0].config);
  EXPECT_EQ(points[0].state_bytes, config.model.state_bytes_per_sequence());
  fs::remove(file);
}

}  // namespace
