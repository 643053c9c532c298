// Language-model training (train/lm_trainer.h) end to end on tiny shards written by the test:
// one step equals a float64 step computed here from the model's full logits and the closed-form
// AdamW update; k accumulated micro-batches and activation checkpointing change nothing; the
// checkpoint is a model folder whose loss on the validation rows is the trainer's; a resumed
// run, and one stopped by SIGINT and resumed, end with the uninterrupted run's weights bit for
// bit; shards with ids outside the model's vocabulary are refused; and a tiny GSA trained on
// tinyshakespeare's bytes reaches a validation loss well below the bytes' unigram entropy.
#include "core/error.h"
#include "data/lm_batches.h"
#include "io/safetensors.h"
#include "io/token_shards.h"
#include "models/architecture.h"
#include "models/causal_lm.h"
#include "support/lm_shards.h"
#include "support/test_support.h"
#include "train/lm_trainer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using lintime::train::LmTrainConfig;
using lintime::train::LmTrainOptions;

using lintime::testing::fresh_dir;
using lintime::testing::kLmTestEos;
using lintime::testing::kLmTestVocab;
using lintime::testing::random_documents;
using lintime::testing::tiny_gsa_config;
using lintime::testing::write_shards;
constexpr int64_t kVocab = kLmTestVocab;
constexpr int64_t kEos = kLmTestEos;

// 4 rows of 16 tokens per step, float64, a constant learning rate, no clipping; eps = 1e-3 so
// that the first AdamW update depends on each gradient's size, not only on its sign.
LmTrainConfig small_config(const fs::path& shards) {
  nlohmann::json document = {
      {"task", "lm"},
      {"model", {{"config", tiny_gsa_config(kVocab)}}},
      {"data", {{"shards", shards.string()}, {"seq_len", 16}}},
      {"train",
       {{"batch_tokens", 64}, {"micro_batch_rows", 4}, {"max_steps", 2}, {"lr", 1e-2}, {"eps", 1e-3},
        {"weight_decay", 0.1}, {"grad_clip", 0.0}, {"schedule", "constant"}, {"precision", "fp64"},
        {"eval_every", 1}, {"eval_tokens", 48}, {"log_every", 1}}}};
  return LmTrainConfig::from_document(document);
}

std::map<std::string, at::Tensor> checkpoint_weights(const fs::path& run) {
  return lintime::io::load_safetensors((run / "checkpoint" / "model.safetensors").string());
}

std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::vector<nlohmann::json> metrics_lines(const fs::path& run) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

LmTrainOptions cpu_run(const fs::path& out) {
  LmTrainOptions options;
  options.out_dir = out.string();
  options.device = "cpu";
  return options;
}

// Trains `config` into `parts` stopped after `stop_at` steps and then resumed; its checkpoint must
// be the uninterrupted run's in `whole`, weights and optimizer state byte for byte.
void expect_resumed_equals_whole(const LmTrainConfig& config, const fs::path& whole, const fs::path& parts,
                                 int64_t stop_at) {
  auto first = cpu_run(parts);
  first.stop_after_steps = stop_at;
  lintime::train::train_lm(config, first);
  auto second = cpu_run(parts);
  second.resume = true;
  lintime::train::train_lm(config, second);
  EXPECT_EQ(file_bytes(whole / "checkpoint" / "model.safetensors"), file_bytes(parts / "checkpoint" / "model.safetensors"));
  EXPECT_EQ(file_bytes(whole / "checkpoint" / "optimizer.safetensors"),
            file_bytes(parts / "checkpoint" / "optimizer.safetensors"));
}

class LmTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    shards_ = fresh_dir("shards");
    write_shards(shards_, random_documents(60, 1), random_documents(12, 2), kEos, kVocab);
  }
  void TearDown() override {
    fs::remove_all(shards_);
    for (const auto& run : runs_) fs::remove_all(run);
  }
  fs::path run_dir(const std::string& name) {
    runs_.push_back(fresh_dir(name));
    return runs_.back();
  }
  fs::path shards_;
  std::vector<fs::path> runs_;
};

TEST_F(LmTraining, OneStepEqualsFloat64Reference) {
  auto config = small_config(shards_);
  config.optim.max_steps = 1;
  const fs::path run = run_dir("one-step");
  lintime::train::train_lm(config, cpu_run(run));

  // The reference: the same initial weights and rows; the loss from the full logits with
  // at::cross_entropy; the AdamW step written out.
  auto model = lintime::models::build_causal_lm(config.model.config, config.optim.seed, "test");
  model->module().to(at::kCPU, at::kDouble);
  auto parameters = model->module().named_parameters();
  for (auto& [name, parameter] : parameters) parameter.requires_grad_(true);
  lintime::data::LmRows rows(lintime::io::TokenShardSet::open(shards_.string(), "train"), {16, 0, true, true});
  const auto batch = rows.rows(0, 4);
  const at::Tensor logits = model->decoder().forward(batch.input_ids.reshape({1, -1}), nullptr, batch.cu_seqlens);
  const at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, kVocab}), batch.labels.reshape({-1}), {},
                                                 at::Reduction::Mean, lintime::data::kIgnoreLabel);
  loss.backward();

  const auto lines = metrics_lines(run);
  ASSERT_FALSE(lines.empty());
  EXPECT_LE(std::abs(lines.front().at("loss").get<double>() - loss.item<double>()), 1e-12 * loss.item<double>());
  const auto trained = checkpoint_weights(run);
  const double lr = 1e-2, beta1 = 0.9, beta2 = 0.95, eps = 1e-3, weight_decay = 0.1;
  ASSERT_EQ(trained.size(), parameters.size());
  for (auto& [name, parameter] : parameters) {
    SCOPED_TRACE(name);
    const at::Tensor g = parameter.grad();
    ASSERT_TRUE(g.defined());
    const bool decays = parameter.dim() >= 2 && name.find("embed") == std::string::npos;
    at::Tensor expected = parameter.detach() * (decays ? 1 - lr * weight_decay : 1.0);
    const at::Tensor m_hat = (1 - beta1) * g / (1 - beta1), v_hat = (1 - beta2) * g * g / (1 - beta2);
    expected = expected - lr * m_hat / (v_hat.sqrt() + eps);
    // The update moves each weight by up to lr = 1e-2; compared relative to that move.
    const double error = (trained.at(name) - expected).abs().max().item<double>();
    EXPECT_LE(error, 1e-13) << name;
  }
}

TEST_F(LmTraining, AccumulatedMicroBatchesAndCheckpointingEqualOneBatch) {
  const auto one_batch = small_config(shards_);
  auto accumulated = one_batch;
  accumulated.micro_batch_rows = 1;  // 4 micro-batches of 1 row
  auto checkpointed = accumulated;
  checkpointed.activation_checkpointing = 1;
  const fs::path a = run_dir("one-batch"), b = run_dir("accumulated"), c = run_dir("checkpointed");
  lintime::train::train_lm(one_batch, cpu_run(a));
  lintime::train::train_lm(accumulated, cpu_run(b));
  lintime::train::train_lm(checkpointed, cpu_run(c));
  const auto expected = checkpoint_weights(a);
  for (const auto& run : {b, c}) {
    const auto weights = checkpoint_weights(run);
    ASSERT_EQ(weights.size(), expected.size());
    for (const auto& [name, tensor] : expected) {
      EXPECT_LE(lintime::testing::relative_max_error(weights.at(name), tensor), 1e-12) << run << ": " << name;
    }
  }
}

TEST_F(LmTraining, CheckpointIsAModelFolderWithTheTrainersValidationLoss) {
  const auto config = small_config(shards_);
  const fs::path run = run_dir("folder");
  const auto result = lintime::train::train_lm(config, cpu_run(run));
  const fs::path folder = run / "checkpoint";
  EXPECT_TRUE(fs::exists(folder / "config.json") && fs::exists(folder / "train_config.json"));

  auto model = lintime::models::load_causal_lm(folder.string(), at::kDouble, at::kCPU);
  lintime::data::LmRows rows(lintime::io::TokenShardSet::open(shards_.string(), "val"), {16, 0, true, false});
  const auto batch = rows.rows(0, 3);  // eval_tokens 48: the first 3 windows
  const at::Tensor logits = model->decoder().forward(batch.input_ids.reshape({1, -1}), nullptr, batch.cu_seqlens);
  const double loss = at::cross_entropy_loss(logits.reshape({-1, kVocab}), batch.labels.reshape({-1}), {},
                                             at::Reduction::Mean, lintime::data::kIgnoreLabel)
                          .item<double>();
  EXPECT_LE(std::abs(loss - result.val_loss), 1e-12 * loss) << loss << " vs the trainer's " << result.val_loss;
}

TEST_F(LmTraining, ResumedRunEqualsUninterruptedRunBitForBit) {
  auto config = small_config(shards_);
  config.precision = "fp32";
  config.optim.max_steps = 4;
  const fs::path whole = run_dir("whole"), parts = run_dir("parts");
  lintime::train::train_lm(config, cpu_run(whole));
  auto first = cpu_run(parts);
  first.stop_after_steps = 2;
  EXPECT_EQ(lintime::train::train_lm(config, first).steps, 2);
  auto second = cpu_run(parts);
  second.resume = true;
  EXPECT_EQ(lintime::train::train_lm(config, second).steps, 4);
  EXPECT_EQ(file_bytes(whole / "checkpoint" / "model.safetensors"), file_bytes(parts / "checkpoint" / "model.safetensors"));
  EXPECT_EQ(file_bytes(whole / "checkpoint" / "optimizer.safetensors"),
            file_bytes(parts / "checkpoint" / "optimizer.safetensors"));
  std::vector<int64_t> steps;
  for (const auto& line : metrics_lines(parts))
    if (!line.contains("eval")) steps.push_back(line.at("step"));
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));  // each step once: the resumed run did only 3 and 4
}

// train.master_weights = false (bf16): no fp32 copies; AdamW's moments in bf16 (4 bytes per
// parameter of optimizer state against 12 with masters); the checkpoint's weights and moments are
// bf16; a resumed run equals the uninterrupted one bit for bit; fp16 without masters is refused.
TEST_F(LmTraining, Bf16WithoutMasterWeightsKeepsBf16StateAndResumesExactly) {
  auto config = small_config(shards_);
  config.precision = "bf16";
  config.optim.max_steps = 4;
  config.optim.eval_every = 2;
  const fs::path with_masters = run_dir("masters");
  lintime::train::train_lm(config, cpu_run(with_masters));
  config.optim.master_weights = false;
  const fs::path whole = run_dir("bf16-whole"), parts = run_dir("bf16-parts");
  const auto result = lintime::train::train_lm(config, cpu_run(whole));
  const auto state_bytes = [](const fs::path& run) {
    return metrics_lines(run).front().at("optimizer_state_bytes").get<int64_t>();
  };
  for (const auto& [name, weight] : checkpoint_weights(whole)) EXPECT_EQ(weight.scalar_type(), at::kBFloat16) << name;
  // The state is what the optimizer file holds: two bf16 moments per parameter (and step counters).
  const auto optimizer = lintime::io::load_safetensors((whole / "checkpoint" / "optimizer.safetensors").string());
  int64_t moment_bytes = 0, file_bytes_total = 0;
  for (const auto& [name, tensor] : optimizer) {
    file_bytes_total += tensor.numel() * tensor.element_size();
    if (tensor.scalar_type() == at::kBFloat16) moment_bytes += tensor.numel() * tensor.element_size();
  }
  EXPECT_EQ(moment_bytes, 4 * result.parameters);
  EXPECT_EQ(state_bytes(whole), file_bytes_total);
  // With masters: fp32 copies (4 bytes) and fp32 moments (8 instead of 4): 8 bytes more per parameter.
  EXPECT_EQ(state_bytes(with_masters) - state_bytes(whole), 8 * result.parameters);
  expect_resumed_equals_whole(config, whole, parts, 2);
  config.precision = "fp16";
  EXPECT_THROW(
      {
        try {
          LmTrainConfig::from_document(config.to_document());
        } catch (const lintime::Error& error) {
          EXPECT_EQ(std::string(error.what()),
                    "config key \"train.master_weights\": false needs train.precision = \"bf16\" (fp16 loses small "
                    "updates without fp32 masters; fp32 and fp64 have none), got precision 'fp16'");
          throw;
        }
      },
      lintime::Error);
}

// bf16 weights with fp32 moments (train.fp32_moments, what a 7B finetune fits in one H200 with):
// the weights stay bf16, the moments are fp32 (12 bytes of state per parameter... of which the
// optimizer's are 8), and a resumed run ends bit for bit where the whole run does.
TEST_F(LmTraining, Bf16WeightsWithFp32MomentsResumeExactly) {
  auto config = small_config(shards_);
  config.precision = "bf16";
  config.optim.max_steps = 4;
  config.optim.eval_every = 2;
  config.optim.master_weights = false;
  config.optim.fp32_moments = true;
  const auto round_trip = LmTrainConfig::from_document(config.to_document());
  EXPECT_TRUE(round_trip.optim.fp32_moments);
  const fs::path whole = run_dir("fp32-moments-whole"), parts = run_dir("fp32-moments-parts");
  const auto result = lintime::train::train_lm(config, cpu_run(whole));
  for (const auto& [name, weight] : checkpoint_weights(whole)) EXPECT_EQ(weight.scalar_type(), at::kBFloat16) << name;
  const auto optimizer = lintime::io::load_safetensors((whole / "checkpoint" / "optimizer.safetensors").string());
  int64_t moment_bytes = 0;
  for (const auto& [name, tensor] : optimizer) {
    if (name.find(".exp_avg") != std::string::npos) {
      EXPECT_EQ(tensor.scalar_type(), at::kFloat) << name;
      moment_bytes += tensor.numel() * tensor.element_size();
    }
  }
  EXPECT_EQ(moment_bytes, 8 * result.parameters);
  expect_resumed_equals_whole(config, whole, parts, 2);
  config.optim.master_weights = true;
  try {
    LmTrainConfig::from_document(config.to_document());
    ADD_FAILURE() << "fp32_moments with master weights must be refused";
  } catch (const lintime::Error& error) {
    EXPECT_NE(std::string(error.what()).find("\"train.fp32_moments\": true applies to bf16 weights without master"),
              std::string::npos)
        << error.what();
  }
}

TEST_F(LmTraining, SigintWritesACheckpointAndTheResumedRunMatches) {
  auto config = small_config(shards_);
  config.precision = "fp32";
  config.optim.max_steps = 60;
  config.optim.eval_every = 60;
  const fs::path whole = run_dir("signal-whole"), stopped = run_dir("signal-stopped");
  lintime::train::train_lm(config, cpu_run(whole));

  std::atomic<bool> done{false};
  std::thread interrupter([&] {  // SIGINT once the first step is logged
    while (!done && metrics_lines(stopped).empty()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (!done) ::kill(::getpid(), SIGINT);
  });
  const auto interrupted = lintime::train::train_lm(config, cpu_run(stopped));
  done = true;
  interrupter.join();
  ASSERT_TRUE(interrupted.interrupted) << "the run ended before the signal came";
  EXPECT_LT(interrupted.steps, 60);
  EXPECT_TRUE(fs::exists(stopped / "checkpoint" / "trainer_state.json"));
  auto resume = cpu_run(stopped);
  resume.resume = true;
  EXPECT_EQ(lintime::train::train_lm(config, resume).steps, 60);
  EXPECT_EQ(file_bytes(whole / "checkpoint" / "model.safetensors"), file_bytes(stopped / "checkpoint" / "model.safetensors"));
}

TEST_F(LmTraining, ShardsWithIdsOutsideTheModelsVocabularyAreRefused) {
  const fs::path wide = run_dir("wide-shards");
  auto documents = random_documents(40, 3);
  documents[5][1] = 100;
  write_shards(wide, documents, random_documents(8, 4), kEos, 128);
  const auto config = small_config(wide);
  try {
    lintime::train::train_lm(config, cpu_run(run_dir("refused")));
    FAIL() << "shards with id 100 trained a model of vocabulary 64";
  } catch (const lintime::Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("100"), std::string::npos) << message;
    EXPECT_NE(message.find("64"), std::string::npos) << message;
  }
}

// fp16's dynamic loss scale: from a scale at which the gradients overflow, steps are skipped
// and each skip halves the scale, until the gradients fit and steps are taken.
TEST_F(LmTraining, Fp16OverflowSkipsTheStepAndHalvesTheLossScale) {
  auto config = small_config(shards_);
  config.precision = "fp16";
  config.optim.max_steps = 24;
  config.optim.eval_every = 24;
  config.optim.initial_loss_scale = 1e8;
  const fs::path run = run_dir("fp16");
  lintime::train::train_lm(config, cpu_run(run));
  int64_t skipped = 0;
  double scale = 1e8;
  bool took_a_step = false;
  for (const auto& line : metrics_lines(run)) {
    if (line.contains("eval")) continue;
    const bool skipped_now = line.value("skipped", false);
    if (line.at("step") == 1) EXPECT_TRUE(skipped_now) << "a loss scale of 1e8 overflows fp16 gradients";
    if (skipped_now) {
      ++skipped, scale /= 2;  // (a later step may overflow again near the fitting scale, and halve it once more)
    } else {
      took_a_step = true;
    }
    EXPECT_EQ(line.at("loss_scale").get<double>(), scale) << "step " << line.at("step");
    EXPECT_EQ(line.at("skipped_steps").get<int64_t>(), skipped);
  }
  EXPECT_GE(skipped, 1);
  EXPECT_TRUE(took_a_step) << "no step fitted in fp16 within 24 halvings";
}

// The bytes of tinyshakespeare, paragraphs as documents (EOS 0, a byte the text never holds),
// every tenth paragraph for validation: a tiny GSA (d 64, 2 layers, 16 slots) trained for 300
// steps of 1,024 tokens must reach a validation loss well below the unigram entropy of the
// training bytes (what a model without context reaches at best).
TEST(LmTrainingOnText, TinyGsaOnShakespeareBeatsTheUnigramEntropy) {
  LINTIME_REQUIRE_SHARED_DATA(data, "tinyshakespeare.txt");
  std::ifstream in(data + "/tinyshakespeare.txt", std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::vector<int64_t>> train, val;
  std::vector<double> counts(256, 0.0);
  std::vector<int64_t> paragraph;
  int index = 0;
  auto end_paragraph = [&] {
    if (paragraph.empty()) return;
    paragraph.push_back(0);
    (index++ % 10 == 9 ? val : train).push_back(paragraph);
    paragraph.clear();
  };
  const std::string bytes = text.str();
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] == '\n' && i + 1 < bytes.size() && bytes[i + 1] == '\n') {
      end_paragraph();
      continue;
    }
    paragraph.push_back(static_cast<unsigned char>(bytes[i]));
  }
  end_paragraph();
  double total = 0;
  for (const auto& document : train)
    for (int64_t token : document) counts[token] += 1, total += 1;
  double entropy = 0;
  for (double count : counts)
    if (count > 0) entropy -= count / total * std::log(count / total);

  const fs::path shards = fresh_dir("shakespeare"), run = fresh_dir("shakespeare-run");
  write_shards(shards, train, val, 0, 256);
  nlohmann::json model = tiny_gsa_config(256);
  model.update({{"hidden_size", 64}, {"num_heads", 4}, {"num_slots", 16}, {"intermediate_size", 128}});
  const auto config = LmTrainConfig::from_document(
      {{"task", "lm"},
       {"model", {{"config", model}}},
       {"data", {{"shards", shards.string()}, {"seq_len", 64}}},
       {"train",
        {{"batch_tokens", 1024}, {"micro_batch_rows", 16}, {"max_steps", 300}, {"lr", 3e-3}, {"warmup_steps", 30},
         {"eval_every", 300}, {"eval_tokens", 16384}, {"log_every", 50}, {"precision", "fp32"}}}});
  const auto result = lintime::train::train_lm(config, cpu_run(run));
  std::printf("unigram entropy of the training bytes %.4f nats; validation loss after 300 steps %.4f\n", entropy,
              result.val_loss);
  EXPECT_LT(result.val_loss, 0.8 * entropy);
  fs::remove_all(shards);
  fs::remove_all(run);
}

}  // namespace
