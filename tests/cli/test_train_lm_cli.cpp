// `lintime train` with a language-model config from the command line: a run on token shards
// leaves a model folder; SIGTERM ends the step in progress, writes the checkpoint and exits 130
// with one line saying where it is, and --resume finishes the run; bad data (no shards, a
// truncated shard, ids beyond the model's vocabulary) is one line and a non-zero exit before
// anything is written.
#include "support/lm_shards.h"
#include "support/run_lintime.h"
#include "support/test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;
using lintime::testing::run_lintime;

class TrainLmCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = lintime::testing::fresh_dir("cli");
    fs::create_directories(dir_);
    lintime::testing::write_shards(dir_ / "shards", lintime::testing::random_documents(80, 7),
                                   lintime::testing::random_documents(10, 8), lintime::testing::kLmTestEos,
                                   lintime::testing::kLmTestVocab);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A config file for `max_steps` steps on `shards`.
  std::string config(int64_t max_steps, const fs::path& shards, int64_t vocab = lintime::testing::kLmTestVocab) {
    const fs::path path = dir_ / ("lm-" + std::to_string(max_steps) + ".toml");
    std::ofstream out(path);
    out << "task = \"lm\"\n[model]\nconfig = \"" << (dir_ / "model.json").string() << "\"\n"
        << "[data]\nshards = \"" << shards.string() << "\"\nseq_len = 16\n"
        << "[train]\nbatch_tokens = 64\nmicro_batch_rows = 4\nmax_steps = " << max_steps
        << "\nwarmup_steps = 0\neval_every = " << max_steps << "\neval_tokens = 32\nlog_every = 1\n";
    std::ofstream(dir_ / "model.json") << lintime::testing::tiny_gsa_config(vocab).dump();
    return path.string();
  }

  fs::path dir_;
};

TEST_F(TrainLmCli, TrainsAModelFolder) {
  const auto result = run_lintime("train " + config(3, dir_ / "shards") + " --device cpu --out " + (dir_ / "run").string());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("validation loss"), std::string::npos) << result.out;
  for (const char* file : {"config.json", "model.safetensors", "train_config.json", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoint" / file)) << file;
  const auto info = run_lintime("info " + (dir_ / "run" / "checkpoint").string());
  EXPECT_EQ(info.exit_code, 0) << info.out;
}

TEST_F(TrainLmCli, SigtermWritesACheckpointExits130AndResumes) {
  const std::string cfg = config(100000, dir_ / "shards");
  const fs::path out = dir_ / "run", errors = dir_ / "stderr.txt";
  const std::string script = std::string(LINTIME_BINARY) + " train " + cfg + " --device cpu --out " + out.string() +
                             " 2>" + errors.string() + " >/dev/null & pid=$!; while [ ! -s " +
                             (out / "metrics.jsonl").string() + " ]; do sleep 0.01; done; kill -TERM $pid; wait $pid; echo $?";
  FILE* pipe = popen(("sh -c '" + script + "'").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char buffer[64] = {};
  const bool read = std::fgets(buffer, sizeof(buffer), pipe) != nullptr;
  pclose(pipe);
  ASSERT_TRUE(read);
  EXPECT_EQ(std::stoi(buffer), 130);
  std::ifstream in(errors);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), last;
  for (size_t start = 0, end; start < text.size(); start = end + 1) {  // the last non-empty line
    end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) last = text.substr(start, end - start);
  }
  EXPECT_NE(last.find("interrupted after step"), std::string::npos) << text;
  EXPECT_NE(last.find((out / "checkpoint").string()), std::string::npos) << text;
  const auto state = nlohmann::json::parse(std::ifstream(out / "checkpoint" / "trainer_state.json"));
  const int64_t stopped_at = state.at("step");
  EXPECT_GE(stopped_at, 1);
  const auto resumed = run_lintime("train " + cfg + " --device cpu --resume --stop-after-steps " +
                                   std::to_string(stopped_at + 2) + " --out " + out.string());
  EXPECT_EQ(resumed.exit_code, 0) << resumed.out;
  const auto after = nlohmann::json::parse(std::ifstream(out / "checkpoint" / "trainer_state.json"));
  EXPECT_EQ(after.at("step").get<int64_t>(), stopped_at + 2);
}

void expect_one_line_error(const lintime::testing::CommandResult& result, const std::string& fragment) {
  EXPECT_NE(result.exit_code, 0) << result.out;
  EXPECT_EQ(result.out.find('\n'), result.out.size() - 1) << "expected one line, got: " << result.out;
  EXPECT_NE(result.out.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << result.out;
}

TEST_F(TrainLmCli, BadDataIsOneLineBeforeAnythingIsWritten) {
  const fs::path out = dir_ / "never";
  expect_one_line_error(
      run_lintime("train " + config(3, dir_ / "missing") + " --device cpu --out " + out.string(), lintime::testing::Capture::stderr_only),
      "manifest");
  expect_one_line_error(run_lintime("train " + config(3, dir_ / "shards", 32) + " --device cpu --out " + out.string(),
                                    lintime::testing::Capture::stderr_only),
                        "32");
  const fs::path shard = dir_ / "shards" / "train-00000.bin";
  fs::resize_file(shard, fs::file_size(shard) - 10);
  expect_one_line_error(
      run_lintime("train " + config(3, dir_ / "shards") + " --device cpu --out " + out.string(), lintime::testing::Capture::stderr_only),
      "train-00000.bin");
  EXPECT_FALSE(fs::exists(out)) << "a failed start left " << out;
}

}  // namespace
