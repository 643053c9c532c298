// `lintime sweep` end to end on tiny MQAR runs: every (model, size, rate) runs as its own
// `lintime train`, the table holds each point's best over the rates (as the runs' result.json
// files say), a sweep stopped by SIGTERM and started again ends with the same table as an
// uninterrupted one, and bad sweep files get one line.
#include "support/run_lintime.h"
#include "train/config_document.h"
#include "support/test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <signal.h>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;
using lintime::testing::run_lintime;
using nlohmann::json;

// Two models × two sizes × two rates of 16 steps each (MQAR L 16, 2 pairs).
std::string write_sweep(const fs::path& dir, const std::string& extra_model = "") {
  const fs::path path = dir / "tiny-sweep.toml";
  std::ofstream(path) << "[sweep]\ntitle = \"tiny\"\nd_model = [8, 16]\nlr = [3e-3, 1e-2]\n"
                      << "[[sweep.models]]\nname = \"GSA\"\npaper = [10.0, 20.0]\n"
                      << "model = { layers = [\"gsa\"], gsa = { num_heads = 2, gate_logit_normalizer = 1 } }\n"
                      << "[[sweep.models]]\nname = \"GLA\"\nmodel = { layers = [\"gla\"], gla = { num_heads = 2 } }\n"
                      << extra_model
                      << "[data]\nvocab_size = 32\ntrain = [{ seq_len = 16, kv_pairs = 2, examples = 128 }]\n"
                      << "test = [{ seq_len = 16, kv_pairs = 2, examples = 16 }]\n"
                      << "[train]\nbatch_size = 8\ntest_batch_size = 8\nepochs = 1\nschedule = \"warmup_cosine\"\n"
                      << "warmup_steps = 2\neval_every = 4\ncheckpoint_every = 1\nlog_every = 1\ntarget_accuracy = 1.0\n";
  return path.string();
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// The table's points without the run counts (which an interrupted sweep's table also has).
json best_of_points(const json& table) {
  json points = json::array();
  for (const auto& point : table.at("points")) {
    points.push_back({point.at("model"), point.at("point"), point.at("best_accuracy"), point.at("best_lr"),
                      point.at("state_bytes"), point.at("paper_percent")});
  }
  return points;
}

TEST(SweepCli, RunsEveryPointAndTabulatesTheBestRate) {
  lintime::testing::TempDir dir;
  const fs::path out = fs::path(dir.path()) / "out";
  const auto result = run_lintime("sweep " + write_sweep(dir.path()) + " --device cpu --jobs 2 --out " + out.string());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("[8/8]"), std::string::npos) << result.out;
  const json table = read_json(out / "sweep.json");
  ASSERT_EQ(table.at("points").size(), 4u);
  for (const auto& point : table.at("points")) {
    EXPECT_EQ(point.at("runs_finished"), 2);
    const std::string model = point.at("model"), label = point.at("point");
    double best = -1, best_lr = 0;
    for (const std::string lr : {"lr-0.003", "lr-0.01"}) {
      const fs::path run = out / model / label / lr;
      const json config = read_json(run / "result.json");
      if (config.at("best_accuracy").get<double>() > best) {
        best = config.at("best_accuracy").get<double>();
        best_lr = config.at("lr").get<double>();
      }
      // The run's own config: the model's mixer, its size, its rate.
      const json document = lintime::train::read_toml_file((run / "config.toml").string());
      EXPECT_EQ(document.at("model").at("layers")[0], model == "GSA" ? "gsa" : "gla");
      EXPECT_EQ(document.at("model").at("d_model"), label == "d8" ? 8 : 16);
      EXPECT_EQ(document.at("train").at("lr").get<double>(), config.at("lr").get<double>());
    }
    EXPECT_EQ(point.at("best_accuracy").get<double>(), best) << model << " " << label;
    EXPECT_EQ(point.at("best_lr").get<double>(), best_lr) << model << " " << label;
  }
  EXPECT_EQ(table.at("points")[1].at("paper_percent"), 20.0);
  EXPECT_TRUE(table.at("points")[2].at("paper_percent").is_null());
  EXPECT_TRUE(fs::exists(out / "table.md"));
  if (fs::exists(lintime::testing::source_dir() + "/.venv/bin/python")) EXPECT_TRUE(fs::exists(out / "figure.png"));

  // Run again: nothing left to train, the same table.
  const auto again = run_lintime("sweep " + write_sweep(dir.path()) + " --device cpu --out " + out.string());
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("8 runs (8 finished before)"), std::string::npos) << again.out;
  EXPECT_EQ(best_of_points(read_json(out / "sweep.json")), best_of_points(table));
}

TEST(SweepCli, StoppedAndStartedAgainEndsWithTheUninterruptedTable) {
  lintime::testing::TempDir dir;
  const std::string sweep = write_sweep(dir.path());
  const fs::path full = fs::path(dir.path()) / "full", stopped = fs::path(dir.path()) / "stopped";
  ASSERT_EQ(run_lintime("sweep " + sweep + " --device cpu --out " + full.string()).exit_code, 0);

  // SIGTERM once the second run has logged a step: it checkpoints and stops, the sweep with it.
  const pid_t pid = lintime::testing::spawn_lintime({"sweep", sweep, "--device", "cpu", "--out", stopped.string()});
  ASSERT_GT(pid, 0);
  const fs::path second = stopped / "GSA" / "d8" / "lr-0.01" / "metrics.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(second) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  const json partial = read_json(stopped / "sweep.json");
  EXPECT_LT(partial.at("points")[0].at("runs_finished").get<int>() + partial.at("points")[3].at("runs_finished").get<int>(), 4);

  const auto resumed = run_lintime("sweep " + sweep + " --device cpu --out " + stopped.string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out;
  EXPECT_EQ(best_of_points(read_json(stopped / "sweep.json")), best_of_points(read_json(full / "sweep.json")));
}

// --only, --points and --set pick the runs of one (model, point) and change every run's config:
// only that point's rates run, with the override in their config.toml.
TEST(SweepCli, PointsAndOverridesSelectAndChangeTheRuns) {
  lintime::testing::TempDir dir;
  const fs::path out = fs::path(dir.path()) / "out";
  const auto result = run_lintime("sweep " + write_sweep(dir.path()) + " --device cpu --only GLA --points d16 " +
                                  "--set train.weight_decay=0.25 --out " + out.string());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("2 runs"), std::string::npos) << result.out;
  EXPECT_FALSE(fs::exists(out / "GSA"));
  EXPECT_FALSE(fs::exists(out / "GLA" / "d8"));
  for (const std::string lr : {"lr-0.003", "lr-0.01"}) {
    const fs::path run = out / "GLA" / "d16" / lr;
    ASSERT_TRUE(fs::is_regular_file(run / "result.json")) << run;
    const auto config = lintime::train::read_toml_file((run / "config.toml").string());
    EXPECT_DOUBLE_EQ(config.at("train").at("weight_decay").get<double>(), 0.25);
  }
  const json table = read_json(out / "sweep.json");
  EXPECT_EQ(table.at("points").size(), 4u);  // every point listed, two of them with runs

  // The same folder with another override: its runs are not taken for these (nor resumed).
  const auto changed = run_lintime("sweep " + write_sweep(dir.path()) + " --device cpu --only GLA --points d16 " +
                                   "--set train.weight_decay=0.5 --out " + out.string());
  EXPECT_NE(changed.exit_code, 0);
  EXPECT_NE(changed.out.find("differs from this run's config (the sweep file or --set changed)"), std::string::npos)
      << changed.out;
}

TEST(SweepCli, OverridesOfWhatThePointsVaryAndRefusedRunsLeaveNothing) {
  lintime::testing::TempDir dir;
  const std::string out = dir.file("o");
  // The table names runs by their points; another size under the label "d8" would be a wrong row.
  auto result = run_lintime("sweep " + write_sweep(dir.path()) + " --set model.d_model=32 --out " + out);
  EXPECT_NE(result.out.find("sweep: --set model.d_model: the sweep's points set this key"), std::string::npos)
      << result.out;
  result = run_lintime("sweep " + write_sweep(dir.path()) + " --set train.lr_sweep=[1e-3] --out " + out);
  EXPECT_NE(result.out.find("sweep: --set train.lr_sweep: a sweep's rates are sweep.lr"), std::string::npos)
      << result.out;
  result = run_lintime("sweep " + write_sweep(dir.path()) + " --points d99 --out " + out);
  EXPECT_NE(result.exit_code, 0);
  EXPECT_FALSE(fs::exists(out)) << "a refused sweep leaves no output folder";

  // Names and points that would leave the output folder or repeat a run.
  const fs::path escape = fs::path(dir.path()) / "escape.toml";
  std::ofstream(escape) << "[sweep]\nd_model = [8]\nlr = [1e-2, 1e-2]\n"
                        << "[[sweep.models]]\nname = \"..\"\nmodel = { layers = [\"gla\"] }\n";
  result = run_lintime("sweep " + escape.string() + " --out " + out);
  EXPECT_NE(result.out.find("config key \"sweep.lr\": 0.01 is given twice"), std::string::npos) << result.out;
  std::ofstream(escape) << "[sweep]\nd_model = [8, 8]\nlr = [1e-2]\n"
                        << "[[sweep.models]]\nname = \"..\"\nmodel = { layers = [\"gla\"] }\n";
  result = run_lintime("sweep " + escape.string() + " --out " + out);
  EXPECT_NE(result.out.find("config key \"sweep.d_model\": 8 is given twice"), std::string::npos) << result.out;
  std::ofstream(escape) << "[sweep]\nlr = [1e-2]\n[[sweep.models]]\nname = \"a\\nb\"\nmodel = { layers = [\"gla\"] }\n"
                        << "points = [{ d_model = 8 }]\n";
  result = run_lintime("sweep " + escape.string() + " --out " + out);
  EXPECT_NE(result.out.find("sweep.models[0].name\": expected a name of 1 to 100 printable characters"),
            std::string::npos)
      << result.out;
  EXPECT_FALSE(fs::exists(out));
}

TEST(SweepCli, BadSweepFilesGetOneLine) {
  lintime::testing::TempDir dir;
  const fs::path plain = fs::path(dir.path()) / "plain.toml";
  std::ofstream(plain) << "[model]\nd_model = 8\n";
  auto result = run_lintime("sweep " + plain.string() + " --out " + dir.file("o"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.out.find("has no [sweep] table"), std::string::npos) << result.out;

  const std::string bad_mixer = write_sweep(dir.path(), "[[sweep.models]]\nname = \"X\"\nmodel = { layers = [\"rwkv\"] }\n");
  result = run_lintime("sweep " + bad_mixer + " --out " + dir.file("o"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.out.find("sweep: run X/d8/lr-0.003: "), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("unknown sequence mixer \"rwkv\""), std::string::npos) << result.out;
  EXPECT_FALSE(fs::exists(dir.file("o") + "/X"));

  result = run_lintime("sweep " + write_sweep(dir.path()) + " --only Mamba --out " + dir.file("o"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.out.find("--only names model \"Mamba\""), std::string::npos) << result.out;
  const auto bad_point = run_lintime("sweep " + write_sweep(dir.path()) + " --points d12 --out " + dir.file("o"));
  EXPECT_NE(bad_point.exit_code, 0);
  EXPECT_NE(bad_point.out.find("--points names point \"d12\", which"), std::string::npos) << bad_point.out;
  EXPECT_NE(bad_point.out.find("(its points: d16, d8)"), std::string::npos) << bad_point.out;
  const auto bad_set = run_lintime("sweep " + write_sweep(dir.path()) + " --set train.lrr=1 --out " + dir.file("o"));
  EXPECT_NE(bad_set.exit_code, 0);
  EXPECT_NE(bad_set.out.find("config key \"train.lrr\": unknown"), std::string::npos) << bad_set.out;
  EXPECT_FALSE(fs::exists(dir.file("o") + "/GSA")) << "a refused override must start no run";
  for (const auto& r : {result, bad_point, bad_set}) {
    size_t lines = 0;
    for (char c : r.out) lines += c == '\n';
    EXPECT_EQ(lines, 1u) << r.out;
  }
}

}  // namespace
