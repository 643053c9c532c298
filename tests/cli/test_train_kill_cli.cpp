// Kill tests (issue 25): a training run — MQAR, and a language model on token shards — killed
// with SIGKILL at 20 moments drawn at random (during steps, evaluations and checkpoint saves: a
// checkpoint is written every step) and resumed after each kill ends with the weights, the
// optimizer state and the metrics of an uninterrupted run — bit for bit for the tensors, step for
// step for the log.
#include "io/safetensors.h"
#include "support/lm_shards.h"
#include "support/run_lintime.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>

extern char** environ;

namespace {

namespace fs = std::filesystem;

std::string tiny_config(const fs::path& dir) {
  const fs::path path = dir / "tiny.toml";
  std::ofstream(path) << "[model]\nd_model = 16\nlayers = [\"gsa\"]\n[model.gsa]\nnum_heads = 2\nnum_slots = 8\n"
                      << "[data]\nvocab_size = 32\ntrain = [{ seq_len = 16, kv_pairs = 2, examples = 128 }]\n"
                      << "test = [{ seq_len = 16, kv_pairs = 2, examples = 16 }]\n"
                      << "[train]\nbatch_size = 8\ntest_batch_size = 8\nepochs = 10\nlr = 3e-3\n"
                      << "eval_every = 4\ncheckpoint_every = 1\nlog_every = 1\ntarget_accuracy = 1.0\n";
  return path.string();
}

// A tiny GSA language model on random token shards, fp32 (bit-reproducible on a CPU), 100 steps.
std::string tiny_lm_config(const fs::path& dir) {
  using namespace lintime::testing;
  const fs::path shards = dir / "shards";
  write_shards(shards, random_documents(60, 1), random_documents(12, 2), kLmTestEos, kLmTestVocab);
  nlohmann::json model = tiny_gsa_config(kLmTestVocab);
  std::string inline_model = "{ ";
  for (const auto& [key, value] : model.items()) inline_model += (inline_model.size() > 2 ? ", " : "") + key + " = " + value.dump();
  const fs::path path = dir / "lm.toml";
  std::ofstream(path) << "task = \"lm\"\n[model]\nconfig = " << inline_model << " }\n"
                      << "[data]\nshards = \"" << shards.string() << "\"\nseq_len = 16\n"
                      << "[train]\nbatch_tokens = 64\nmicro_batch_rows = 4\nmax_steps = 100\nlr = 1e-2\n"
                      << "warmup_steps = 0\nprecision = \"fp32\"\neval_every = 10\neval_tokens = 48\n"
                      << "checkpoint_every = 1\nlog_every = 1\n";
  return path.string();
}

// Starts `lintime train` in the background; returns its pid.
pid_t start_training(const std::string& config, const fs::path& out, bool resume) {
  std::vector<std::string> args = {"train", config, "--device", "cpu", "--out", out.string()};
  if (resume) args.push_back("--resume");
  const pid_t pid = lintime::testing::spawn_lintime(args);
  EXPECT_GT(pid, 0);
  return pid;
}

bool has_checkpoint(const fs::path& out) {
  return fs::exists(out / "checkpoint" / "trainer_state.json") || fs::exists(out / "checkpoint.old" / "trainer_state.json");
}

// The training records' steps in metrics.jsonl (read while a run may be writing it: a line not
// yet complete is not counted).
std::vector<int64_t> logged_train_steps(const fs::path& out) {
  std::vector<int64_t> steps;
  std::ifstream in(out / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (in.eof()) break;  // no newline after it: still being written
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_object() && !record.value("eval", false)) steps.push_back(record.at("step").get<int64_t>());
  }
  return steps;
}

class TrainKill : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainKill, TwentyKillsAndResumesEndAsAnUninterruptedRun) {
  lintime::testing::TempDir dir;
  const std::string config = GetParam() == "lm" ? tiny_lm_config(dir.path()) : tiny_config(dir.path());
  const fs::path full = fs::path(dir.path()) / "full", killed = fs::path(dir.path()) / "killed";
  auto result = lintime::testing::run_lintime("train " + config + " --device cpu --out " + full.string());
  ASSERT_EQ(result.exit_code, 0) << result.out;

  // A kill lands a random number of logged steps (0-4) after the run starts, then a random
  // 0-20 ms later: during start-up, a step, an evaluation or a checkpoint save. Counting steps
  // rather than time keeps every kill inside the run however loaded the machine is (20 kills use
  // at most 84 of its 160 steps for MQAR, of 100 for the language model).
  std::mt19937 random(2026);
  std::uniform_int_distribution<int> steps_before_kill(0, 4), extra_ms(0, 20);
  int kills = 0, finished_runs = 0;
  while (finished_runs == 0) {
    const size_t logged_at_start = logged_train_steps(killed).size();
    const pid_t pid = start_training(config, killed, has_checkpoint(killed));
    int status = 0;
    if (kills < 20) {
      const size_t target = logged_at_start + static_cast<size_t>(steps_before_kill(random));
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      bool running = true;
      while (running && logged_train_steps(killed).size() < target && std::chrono::steady_clock::now() < deadline) {
        running = waitpid(pid, &status, WNOHANG) == 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (running) std::this_thread::sleep_for(std::chrono::milliseconds(extra_ms(random)));
      if (running && waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        ++kills;
        continue;
      }
    } else {
      waitpid(pid, &status, 0);
    }
    // Ended by itself: the run finished.
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a resumed run failed after " << kills << " kills";
    ++finished_runs;
  }
  EXPECT_EQ(kills, 20);
  for (const char* file : {"checkpoint/model.safetensors", "checkpoint/optimizer.safetensors"}) {
    auto expected = lintime::io::load_safetensors((full / file).string());
    auto actual = lintime::io::load_safetensors((killed / file).string());
    ASSERT_EQ(expected.size(), actual.size()) << file;
    for (const auto& [name, tensor] : expected) {
      ASSERT_TRUE(actual.count(name)) << file << ": " << name;
      EXPECT_TRUE(at::equal(tensor, actual.at(name))) << file << ": " << name << " differs after 20 kills";
    }
  }
  EXPECT_EQ(logged_train_steps(killed), logged_train_steps(full));
  EXPECT_TRUE(fs::exists(killed / "result.json"));
  EXPECT_FALSE(fs::exists(killed / "checkpoint.tmp"));
}

INSTANTIATE_TEST_SUITE_P(Tasks, TrainKill, ::testing::Values("mqar", "lm"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
