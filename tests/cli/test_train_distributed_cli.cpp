// Data-parallel `lintime train` on the CPU through c10d's Gloo group, over loopback: ranks are
// started by the test (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT as torchrun sets them, rank 0
// serving the store) or by torchrun from .venv, each bounded by `timeout`. Two ranks with half
// the rows each equal one process with the whole batch (LM and MQAR, with and without gradient
// accumulation); the bucket size changes nothing; a run resumes on another world size; a killed
// rank ends the other within --timeout with one line, and the last checkpoint resumes.
#include "support/lm_shards.h"
#include "support/run_lintime.h"
#include "support/test_support.h"

#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using lintime::testing::run_lintime;

// A port no one listens on now (the kernel's choice for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct RanksResult {
  std::vector<int> exit_codes;
  std::vector<std::string> logs;
};

// Starts `world` lintime processes with `arguments`, as torchrun would without its agent, and
// waits for all (each at most 120 s).
RanksResult run_ranks(int world, const std::string& arguments, const fs::path& log_dir) {
  const int port = free_port();
  std::string script = "export MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) +
                       " WORLD_SIZE=" + std::to_string(world) + "; ";
  for (int r = 0; r < world; ++r) {
    script += "RANK=" + std::to_string(r) + " LOCAL_RANK=" + std::to_string(r) + " timeout 120 " + LINTIME_BINARY +
              " " + arguments + " > " + (log_dir / ("rank" + std::to_string(r) + ".log")).string() + " 2>&1 & p" +
              std::to_string(r) + "=$!; ";
  }
  for (int r = 0; r < world; ++r) script += "wait $p" + std::to_string(r) + "; echo $?; ";
  RanksResult result;
  FILE* pipe = popen(("sh -c '" + script + "'").c_str(), "r");
  char line[64];
  while (pipe != nullptr && std::fgets(line, sizeof(line), pipe) != nullptr) result.exit_codes.push_back(std::stoi(line));
  if (pipe != nullptr) pclose(pipe);
  for (int r = 0; r < world; ++r) result.logs.push_back(read_text(log_dir / ("rank" + std::to_string(r) + ".log")));
  return result;
}

// The largest |a - b| / max|a| over the checkpoints' tensors.
double weights_difference(const fs::path& a, const fs::path& b) {
  const auto left = lintime::io::load_safetensors((a / "checkpoint" / "model.safetensors").string());
  const auto right = lintime::io::load_safetensors((b / "checkpoint" / "model.safetensors").string());
  EXPECT_EQ(left.size(), right.size());
  double worst = 0;
  for (const auto& [name, tensor] : left) {
    const at::Tensor x = tensor.to(at::kDouble), y = right.at(name).to(at::kDouble);
    worst = std::max(worst, ((x - y).abs().max() / x.abs().max().clamp_min(1e-300)).item<double>());
  }
  return worst;
}

bool weights_equal(const fs::path& a, const fs::path& b) {
  const auto left = lintime::io::load_safetensors((a / "checkpoint" / "model.safetensors").string());
  const auto right = lintime::io::load_safetensors((b / "checkpoint" / "model.safetensors").string());
  for (const auto& [name, tensor] : left)
    if (!at::equal(tensor, right.at(name))) return false;
  return left.size() == right.size();
}

// Training losses by step from metrics.jsonl.
std::vector<double> losses(const fs::path& run) {
  std::vector<double> result;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line);
    if (!record.contains("eval")) result.push_back(record.at("loss").get<double>());
  }
  return result;
}

class TrainDistributedCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = lintime::testing::fresh_dir("dist");
    fs::create_directories(dir_);
    lintime::testing::write_shards(dir_ / "shards", lintime::testing::random_documents(80, 7),
                                   lintime::testing::random_documents(10, 8), lintime::testing::kLmTestEos,
                                   lintime::testing::kLmTestVocab);
    std::ofstream(dir_ / "model.json") << lintime::testing::tiny_gsa_config(lintime::testing::kLmTestVocab).dump();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // An LM config: steps of 8 rows of 16 tokens (documents packed with boundaries).
  std::string lm_config(int64_t max_steps, int64_t micro_batch_rows, const std::string& precision = "fp64") {
    const fs::path path = dir_ / ("lm-" + std::to_string(max_steps) + "-" + std::to_string(micro_batch_rows) + ".toml");
    std::ofstream out(path);
    out << "task = \"lm\"\n[model]\nconfig = \"" << (dir_ / "model.json").string() << "\"\n"
        << "[data]\nshards = \"" << (dir_ / "shards").string() << "\"\nseq_len = 16\ndocument_boundaries = true\n"
        << "[train]\nbatch_tokens = 128\nmicro_batch_rows = " << micro_batch_rows << "\nmax_steps = " << max_steps
        << "\nprecision = \"" << precision << "\"\nlr = 3e-3\nwarmup_steps = 1\neval_every = " << max_steps
        << "\neval_tokens = 64\nlog_every = 1\n";
    return path.string();
  }

  fs::path run_dir(const std::string& name) {
    fs::create_directories(dir_ / (name + "-logs"));
    return dir_ / name;
  }

  // `world` ranks training `config` into run `name`; every rank must exit 0.
  fs::path train(int world, const std::string& config, const std::string& name, const std::string& extra = "") {
    const fs::path out = run_dir(name);
    const std::string arguments = "train " + config + " --device cpu --out " + out.string() + " " + extra;
    if (world == 1) {
      const auto result = run_lintime(arguments);
      EXPECT_EQ(result.exit_code, 0) << result.out;
      return out;
    }
    const auto result = run_ranks(world, arguments, dir_ / (name + "-logs"));
    EXPECT_EQ(result.exit_codes.size(), static_cast<size_t>(world));
    for (size_t r = 0; r < result.exit_codes.size(); ++r) EXPECT_EQ(result.exit_codes[r], 0) << result.logs[r];
    return out;
  }

  void expect_peer_failure_is_one_line(const std::string& signal, int timeout_s);

  fs::path dir_;
};

// fp64 weights after 4 AdamW steps: the sums over ranks round differently from one process's
// products (the batch's rows reach the gradient in another grouping), at float64's 2^-52 per
// operation, amplified by the steps; measured 1e-15 to 1e-14.
constexpr double kFloat64Steps = 1e-12;

TEST_F(TrainDistributedCli, LmTwoRanksEqualOneProcessWithTheWholeBatch) {
  const fs::path single = train(1, lm_config(4, 4), "single");  // 2 micro-batches of 4 rows
  const fs::path pair = train(2, lm_config(4, 4), "pair");      // 1 micro-batch of 4 rows per rank
  const fs::path accumulated = train(2, lm_config(4, 2), "accumulated");  // 2 micro-batches of 2 per rank
  const double pair_error = weights_difference(single, pair), accumulated_error = weights_difference(single, accumulated);
  std::printf("LM fp64 after 4 steps: 2 ranks %.3g, 2 ranks x 2 micro-batches %.3g (bound %.0g)\n", pair_error,
              accumulated_error, kFloat64Steps);
  EXPECT_LE(pair_error, kFloat64Steps);
  EXPECT_LE(accumulated_error, kFloat64Steps);
  const auto expected = losses(single);
  ASSERT_EQ(expected.size(), 4u);
  for (const fs::path& run : {pair, accumulated}) {
    const auto got = losses(run);
    ASSERT_EQ(got.size(), expected.size()) << run;
    for (size_t s = 0; s < got.size(); ++s) EXPECT_NEAR(got[s], expected[s], 1e-12 * expected[s]) << run << " step " << s + 1;
  }
  EXPECT_FALSE(fs::exists(pair / "checkpoint" / "model.safetensors.tmp"));
}

TEST_F(TrainDistributedCli, Float32TwoRanksMatchOneProcessToRounding) {
  const fs::path single = train(1, lm_config(4, 4, "fp32"), "single32");
  const fs::path pair = train(2, lm_config(4, 4, "fp32"), "pair32");
  const double error = weights_difference(single, pair);
  // fp32: 2^-24 per operation where fp64 had 2^-53: the fp64 bound scaled by 2^29.
  std::printf("LM fp32 after 4 steps: 2 ranks %.3g (bound %.2g)\n", error, kFloat64Steps * 536870912.0);
  EXPECT_LE(error, kFloat64Steps * 536870912.0);
}

TEST_F(TrainDistributedCli, BucketSizeDoesNotChangeTheResult) {
  // With two ranks every element's sum is one addition, whatever the buckets: bit for bit.
  const fs::path many = train(2, lm_config(3, 4), "many-buckets", "--bucket-mb 0.001");
  const fs::path one = train(2, lm_config(3, 4), "one-bucket", "--bucket-mb 1000");
  EXPECT_TRUE(weights_equal(many, one));
  const auto single = train(1, lm_config(3, 4), "single3");
  EXPECT_LE(weights_difference(single, many), kFloat64Steps);
}

// ZeRO stage 1: the same run with each rank keeping half the master weights and moments. The
// gradient sums are the same numbers (reduce-scatter instead of all-reduce); the clipping norm
// is summed from the shards in another order, a rounding apart.
TEST_F(TrainDistributedCli, ShardedOptimizerEqualsTheReplicatedOne) {
  const std::string shard = " --set train.shard_optimizer=true";
  const fs::path replicated = train(2, lm_config(4, 2), "replicated");
  const fs::path sharded = train(2, lm_config(4, 2), "sharded", shard);
  // Four ranks and buckets of ~10 KB: parts padded, parameters cut across ranks.
  const fs::path four = train(4, lm_config(4, 2), "sharded-4", shard + " --bucket-mb 0.01");
  const fs::path single = train(1, lm_config(4, 2), "single-4");
  const double error = weights_difference(replicated, sharded), four_error = weights_difference(single, four);
  // Rank 0 keeps about 1/W of the master weights and moments (fp64 masters are the parameters
  // themselves when replicated, copies when sharded: 3 numbers per parameter over W vs 2).
  const auto state_bytes = [](const fs::path& run) {
    std::ifstream in(run / "metrics.jsonl");
    std::string line;
    std::getline(in, line);
    return nlohmann::json::parse(line).at("optimizer_state_bytes").get<double>();
  };
  std::printf("rank 0's optimizer state: replicated %.0f B, 2 sharded ranks %.0f B, 4 sharded ranks %.0f B\n",
              state_bytes(replicated), state_bytes(sharded), state_bytes(four));
  EXPECT_LE(state_bytes(sharded), state_bytes(replicated) * 3 / 4 + 1024);
  EXPECT_LE(state_bytes(four), state_bytes(replicated) * 3 / 8 + 4096);
  std::printf("LM fp64 after 4 steps: sharded vs replicated (2 ranks) %.3g; 4 sharded ranks vs 1 process %.3g\n",
              error, four_error);
  EXPECT_LE(error, kFloat64Steps);
  EXPECT_LE(four_error, kFloat64Steps);
}

TEST_F(TrainDistributedCli, ShardedOptimizerCheckpointsResumeExactly) {
  const std::string shard = " --set train.shard_optimizer=true";
  const std::string config = lm_config(4, 4);
  const fs::path whole = train(2, config, "sharded-whole", shard);
  const fs::path split = train(2, config, "sharded-split", shard + " --stop-after-steps 2");
  train(2, config, "sharded-split", shard + " --resume");
  EXPECT_TRUE(weights_equal(whole, split));
  // The checkpoint holds whole tensors, as a replicated run's: bf16 compute with a master copy too.
  const auto optimizer = lintime::io::load_safetensors((whole / "checkpoint" / "optimizer.safetensors").string());
  const auto model = lintime::io::load_safetensors((whole / "checkpoint" / "model.safetensors").string());
  for (const auto& [name, tensor] : model) {
    ASSERT_TRUE(optimizer.count(name + ".exp_avg")) << name;
    EXPECT_EQ(optimizer.at(name + ".exp_avg").sizes(), tensor.sizes()) << name;
    EXPECT_EQ(optimizer.at(name + ".step").item<int64_t>(), 4) << name;
  }
}

TEST_F(TrainDistributedCli, ShardedBf16WithAccumulationFollowsTheReplicatedRun) {
  const std::string bf16 = lm_config(3, 2, "bf16");
  const fs::path replicated = train(2, bf16, "bf16-replicated");
  const fs::path sharded = train(2, bf16, "bf16-sharded", "--set train.shard_optimizer=true");
  const double error = weights_difference(replicated, sharded);
  // fp32 masters; the two differ by the clipping coefficient's rounding (fp32 vs fp64 sums).
  std::printf("LM bf16 compute after 3 steps, sharded vs replicated masters: %.3g\n", error);
  EXPECT_LE(error, 1e-5);
}

TEST_F(TrainDistributedCli, ShardingOneProcessIsOneLine) {
  const auto result = run_lintime("train " + lm_config(1, 4) + " --device cpu --out " + (dir_ / "one").string() +
                                  " --set train.shard_optimizer=true");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.out.find("lintime: error: train.shard_optimizer: shards the optimizer across the ranks"),
            std::string::npos) << result.out;
}

TEST_F(TrainDistributedCli, ResumesOnAnotherWorldSize) {
  // Rows are drawn by global index: 2 ranks for 2 steps, then 1 process for 2 more, equal 1
  // process for 4.
  const std::string config = lm_config(4, 4);
  const fs::path whole = train(1, config, "whole");
  const fs::path split = train(2, config, "split", "--stop-after-steps 2");
  train(1, config, "split", "--resume");
  EXPECT_LE(weights_difference(whole, split), kFloat64Steps);
  EXPECT_EQ(losses(split).size(), 4u);
  // On the same world size the resume is exact.
  const fs::path pair_whole = train(2, config, "pair-whole");
  const fs::path pair_split = train(2, config, "pair-split", "--stop-after-steps 2");
  train(2, config, "pair-split", "--resume");
  EXPECT_TRUE(weights_equal(pair_whole, pair_split));
}

TEST_F(TrainDistributedCli, MqarTwoRanksEqualOneProcessWithTheWholeBatch) {
  const std::string config = std::string(std::getenv("LINTIME_SOURCE_DIR") ? std::getenv("LINTIME_SOURCE_DIR") : ".") +
                             "/configs/mqar/gsa-small.toml";
  const std::string extra = "--stop-after-steps 6";  // MQAR trains in fp32
  const fs::path single = train(1, config, "mqar-single", extra);
  const fs::path pair = train(2, config, "mqar-pair", extra);
  const double error = weights_difference(single, pair);
  const fs::path sharded = train(2, config, "mqar-sharded", extra + " --set train.shard_optimizer=true");
  const double sharded_error = weights_difference(single, sharded);
  std::printf("MQAR fp32 after 6 steps: 2 ranks %.3g, 2 sharded ranks %.3g (bound %.2g)\n", error, sharded_error,
              kFloat64Steps * 536870912.0);
  EXPECT_LE(error, kFloat64Steps * 536870912.0);
  EXPECT_LE(sharded_error, kFloat64Steps * 536870912.0);
}

// Rank 1 gets `signal` once rank 0 has logged step 3 (checkpoints every step): SIGKILL (a dead
// rank: no handler runs) or SIGSTOP (a hung one). Rank 0 must stop within --timeout with one
// line; the last checkpoint must resume.
void TrainDistributedCli::expect_peer_failure_is_one_line(const std::string& signal, int timeout_s) {
  const std::string config = lm_config(100000, 4);
  const fs::path out = run_dir("failed-" + signal), logs = dir_ / ("failed-" + signal + "-logs");
  const int port = free_port();
  // (Rank 1 runs without `timeout`, whose own process would take the signal instead.)
  const std::string common = "export MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " WORLD_SIZE=2; ";
  const std::string arguments = std::string(LINTIME_BINARY) + " train " + config + " --device cpu --out " + out.string() +
                                " --set train.checkpoint_every=1 --timeout " + std::to_string(timeout_s);
  const std::string script =
      common + "RANK=0 timeout 120 " + arguments + " > " + (logs / "rank0.log").string() + " 2>&1 & p0=$!; " +
      "RANK=1 " + arguments + " > " + (logs / "rank1.log").string() + " 2>&1 & p1=$!; " +
      "while [ $(cat " + (out / "metrics.jsonl").string() + " 2>/dev/null | wc -l) -lt 3 ]; do sleep 0.02; done; " +
      "kill -" + signal + " $p1; start=$(date +%s); wait $p0; echo $?; echo $(( $(date +%s) - start )); kill -KILL $p1";
  FILE* pipe = popen(("sh -c '" + script + "'").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char line[64];
  std::vector<int> values;
  while (std::fgets(line, sizeof(line), pipe) != nullptr) values.push_back(std::stoi(line));
  pclose(pipe);
  ASSERT_EQ(values.size(), 2u);
  const std::string log = read_text(logs / "rank0.log");
  EXPECT_NE(values[0], 0) << log;
  EXPECT_NE(values[0], 124) << "rank 0 hung until the test's own timeout:\n" << log;
  EXPECT_LE(values[1], timeout_s + 5) << "rank 0 took " << values[1] << " s to notice";
  // One line of error, naming the operation and the ranks.
  const size_t error = log.find("lintime: error: distributed: ");
  ASSERT_NE(error, std::string::npos) << log;
  const std::string message = log.substr(error, log.find('\n', error) - error);
  EXPECT_NE(message.find("failed on rank 0 of 2"), std::string::npos) << message;
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
  std::printf("rank 0 stopped %d s after SIG%s to rank 1: %s\n", values[1], signal.c_str(), message.c_str());

  // The last checkpoint is whole and resumes (in one process: rows are drawn by global index).
  const auto state = nlohmann::json::parse(read_text(out / "checkpoint" / "trainer_state.json"));
  const int64_t step = state.at("step").get<int64_t>();
  EXPECT_GE(step, 2);
  const auto resumed = run_lintime("train " + config + " --device cpu --out " + out.string() +
                                   " --set train.checkpoint_every=1 --resume --stop-after-steps " + std::to_string(step + 1));
  EXPECT_EQ(resumed.exit_code, 0) << resumed.out;
}

TEST_F(TrainDistributedCli, AKilledRankEndsTheOtherWithOneLineAndTheCheckpointResumes) {
  expect_peer_failure_is_one_line("KILL", 10);
}

TEST_F(TrainDistributedCli, AHungRankEndsTheOtherAfterTheTimeout) { expect_peer_failure_is_one_line("STOP", 3); }

TEST_F(TrainDistributedCli, TorchrunStartsTheRanks) {
  const fs::path torchrun = fs::path(LINTIME_PYTHON).parent_path() / "torchrun";
  if (!fs::exists(torchrun)) GTEST_SKIP() << "no torchrun beside " << LINTIME_PYTHON;
  const fs::path out = run_dir("torchrun");
  const std::string command = "timeout 120 " + torchrun.string() + " --standalone --nproc-per-node 2 --no-python " +
                              LINTIME_BINARY + " train " + lm_config(2, 4) + " --device cpu --out " + out.string() +
                              " > " + (dir_ / "torchrun.log").string() + " 2>&1";
  const int status = std::system(command.c_str());
  ASSERT_EQ(WEXITSTATUS(status), 0) << read_text(dir_ / "torchrun.log");
  std::ifstream in(out / "metrics.jsonl");
  std::string first;
  std::getline(in, first);
  EXPECT_EQ(nlohmann::json::parse(first).at("world_size").get<int>(), 2) << first;
  const fs::path single = train(1, lm_config(2, 4), "torchrun-single");
  EXPECT_LE(weights_difference(single, out), kFloat64Steps);
}

TEST_F(TrainDistributedCli, CtrlCOnTorchrunStopsEveryRankWithACheckpoint) {
  const fs::path torchrun = fs::path(LINTIME_PYTHON).parent_path() / "torchrun";
  if (!fs::exists(torchrun)) GTEST_SKIP() << "no torchrun beside " << LINTIME_PYTHON;
  const std::string config = lm_config(100000, 4);
  const fs::path out = run_dir("ctrl-c"), log = dir_ / "ctrl-c.log";
  // torchrun passes SIGINT on to its workers; they agree on the step to stop after.
  const std::string script = "timeout 120 " + torchrun.string() + " --standalone --nproc-per-node 2 --no-python " +
                             LINTIME_BINARY + " train " + config + " --device cpu --out " + out.string() +
                             " > " + log.string() + " 2>&1 & p=$!; while [ $(cat " + (out / "metrics.jsonl").string() +
                             " 2>/dev/null | wc -l) -lt 3 ]; do sleep 0.02; done; pkill -INT -P $p -f torchrun; wait $p; echo $?";
  FILE* pipe = popen(("sh -c '" + script + "'").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char line[64] = {};
  const bool read = std::fgets(line, sizeof(line), pipe) != nullptr;
  pclose(pipe);
  ASSERT_TRUE(read);
  const std::string text = read_text(log);
  EXPECT_NE(std::stoi(line), 124) << "torchrun did not stop:\n" << text;
  // Both ranks said where the checkpoint is, after the same step.
  size_t first = text.find("interrupted after step "), second = text.find("interrupted after step ", first + 1);
  ASSERT_NE(first, std::string::npos) << text;
  ASSERT_NE(second, std::string::npos) << text;
  const int64_t step = std::stoll(text.substr(first + 23));
  EXPECT_EQ(std::stoll(text.substr(second + 23)), step) << text;
  const auto state = nlohmann::json::parse(read_text(out / "checkpoint" / "trainer_state.json"));
  EXPECT_EQ(state.at("step").get<int64_t>(), step);
  const auto resumed = run_lintime("train " + config + " --device cpu --out " + out.string() + " --resume --stop-after-steps " +
                                   std::to_string(step + 1));
  EXPECT_EQ(resumed.exit_code, 0) << resumed.out;
}

TEST_F(TrainDistributedCli, APartialLaunchEnvironmentIsOneLine) {
  const auto result = run_lintime("train " + lm_config(1, 4) + " --device cpu --out " + (dir_ / "bad").string());
  ASSERT_EQ(result.exit_code, 0) << result.out;  // no variables: one process
  const auto partial = lintime::testing::run_lintime_with_env("WORLD_SIZE=2", "train " + lm_config(1, 4) +
                                                              " --device cpu --out " + (dir_ / "bad2").string());
  EXPECT_NE(partial.exit_code, 0);
  EXPECT_NE(partial.out.find("lintime: error: distributed: RANK is not set"), std::string::npos) << partial.out;
  const auto uneven = run_ranks(3, "train " + lm_config(1, 4) + " --device cpu --out " + run_dir("bad3").string(),
                                dir_ / "bad3-logs");
  ASSERT_EQ(uneven.exit_codes.size(), 3u);
  EXPECT_NE(uneven.exit_codes[0], 0);
  EXPECT_NE(uneven.logs[0].find("do not split into 3 ranks"), std::string::npos) << uneven.logs[0];
  EXPECT_FALSE(fs::exists(dir_ / "bad3" / "checkpoint"));
}

}  // namespace
