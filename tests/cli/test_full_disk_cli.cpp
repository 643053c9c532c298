// A disk that fills during a checkpoint save (issue 25): the run stops with one line naming the
// file and the error, the previous checkpoint stays whole and no checkpoint.tmp is left, and
// resuming that checkpoint elsewhere ends with the uninterrupted run's weights bit for bit.
// A small tmpfs needs mount rights (root in a VM or container that allows it; the test skips
// otherwise); a per-file size limit (RLIMIT_FSIZE, as `ulimit -f`) needs none.
#include "io/safetensors.h"
#include "support/run_lintime.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/mount.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;
using lintime::testing::run_lintime;

// 16 steps of a tiny GSA on MQAR, a checkpoint every 4 steps (model 80 KB, optimizer 163 KB).
std::string tiny_config(const fs::path& dir) {
  const fs::path path = dir / "tiny.toml";
  std::ofstream(path) << "[model]\nd_model = 64\nlayers = [\"gsa\"]\n[model.gsa]\nnum_heads = 2\nnum_slots = 8\n"
                      << "[data]\nvocab_size = 32\ntrain = [{ seq_len = 16, kv_pairs = 2, examples = 128 }]\n"
                      << "test = [{ seq_len = 16, kv_pairs = 2, examples = 16 }]\n"
                      << "[train]\nbatch_size = 8\ntest_batch_size = 8\nepochs = 1\nlr = 3e-3\n"
                      << "eval_every = 4\ncheckpoint_every = 4\nlog_every = 1\ntarget_accuracy = 1.0\n";
  return path.string();
}

// The error lines of a run's output (progress lines aside).
std::vector<std::string> error_lines(const std::string& out) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    const std::string line = out.substr(start, end - start);
    if (line.find("error") != std::string::npos) lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

void expect_same_weights(const fs::path& a, const fs::path& b) {
  const auto expected = lintime::io::load_safetensors(a.string());
  const auto actual = lintime::io::load_safetensors(b.string());
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, tensor] : expected) EXPECT_TRUE(at::equal(tensor, actual.at(name))) << name;
}

TEST(FullDisk, ASaveThatRunsOutOfSpaceKeepsThePreviousCheckpoint) {
  lintime::testing::TempDir dir;
  const fs::path small = fs::path(dir.path()) / "small";
  fs::create_directories(small);
  // 400 KiB: the first checkpoint (244 KB) fits, the second (written beside it) does not.
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=400k") != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs here (" << std::strerror(errno) << "); the ulimit test covers the rest";
  }
  struct Unmount {
    fs::path path;
    ~Unmount() { ::umount(path.c_str()); }
  } unmount{small};
  const std::string config = tiny_config(dir.path());
  const auto full = run_lintime("train " + config + " --device cpu --out " + (small / "run").string());
  EXPECT_NE(full.exit_code, 0) << full.out;
  const auto errors = error_lines(full.out);
  ASSERT_EQ(errors.size(), 1u) << full.out;
  EXPECT_NE(errors[0].find("lintime: error: "), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("No space left on device"), std::string::npos) << errors[0];
  EXPECT_FALSE(fs::exists(small / "run" / "checkpoint.tmp"));
  std::ifstream state_file(small / "run" / "checkpoint" / "trainer_state.json");
  const auto state = nlohmann::json::parse(state_file);
  EXPECT_EQ(state.at("optimizer_step_count"), 4);

  // The kept checkpoint, copied to a disk with room, resumes to the uninterrupted run's end.
  const fs::path moved = fs::path(dir.path()) / "moved", reference = fs::path(dir.path()) / "reference";
  fs::copy(small / "run", moved, fs::copy_options::recursive);
  ASSERT_EQ(run_lintime("train " + config + " --device cpu --out " + moved.string() + " --resume").exit_code, 0);
  ASSERT_EQ(run_lintime("train " + config + " --device cpu --out " + reference.string()).exit_code, 0);
  expect_same_weights(reference / "checkpoint" / "model.safetensors", moved / "checkpoint" / "model.safetensors");
  expect_same_weights(reference / "checkpoint" / "optimizer.safetensors", moved / "checkpoint" / "optimizer.safetensors");
}

TEST(FullDisk, AFileSizeLimitStopsTheFirstSaveCleanly) {
  lintime::testing::TempDir dir;
  // 100 KiB per file: the model file fits, the optimizer's does not. SIGXFSZ ignored (as a
  // shell's `trap "" XFSZ`), so the write returns EFBIG instead of killing the process.
  const std::string command = "bash -c 'ulimit -f 100; trap \"\" XFSZ; exec " + std::string(LINTIME_BINARY) +
                              " train " + tiny_config(dir.path()) + " --device cpu --out " +
                              (fs::path(dir.path()) / "limited").string() + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out_text;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) out_text.append(buffer, n);
  const int status = pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << out_text;
  const auto errors = error_lines(out_text);
  ASSERT_EQ(errors.size(), 1u) << out_text;
  EXPECT_NE(errors[0].find("optimizer.safetensors': write failed: File too large"), std::string::npos) << errors[0];
  const fs::path limited = fs::path(dir.path()) / "limited";
  EXPECT_FALSE(fs::exists(limited / "checkpoint.tmp"));
  EXPECT_FALSE(fs::exists(limited / "checkpoint"));
  EXPECT_FALSE(fs::exists(limited / "result.json"));
}

}  // namespace
