// End-to-end tests of the `lintime` binary: bad input gets one clear line and a non-zero exit
// with nothing written; training, eval and info work; a run stopped and resumed ends with
// exactly the weights of an uninterrupted run (CPU); forward and generate run a GSA model folder.
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "models/based_config.h"
#include "models/based_model.h"
#include "models/gsa_model.h"
#include "models/llama_model.h"
#include "support/based_configs.h"
#include "support/run_lintime.h"
#include "support/test_support.h"
#include "text/tokenizer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <sys/wait.h>

namespace {
namespace fs = std::filesystem;

using lintime::testing::Capture;
using lintime::testing::CommandResult;
using lintime::testing::run_lintime;

CommandResult run_errors(const std::string& arguments) { return run_lintime(arguments, Capture::stderr_only); }
CommandResult run_stdout(const std::string& arguments) { return run_lintime(arguments, Capture::stdout_only); }

void write_byte_tokenizer(const fs::path& folder);  // below

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lintime_cli_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A 2-layer GSA language model over bytes (vocabulary 257, EOS 256), `adjust` applied.
  template <typename Adjust>
  static lintime::models::GsaConfig tiny_gsa_config(Adjust adjust) {
    lintime::models::GsaConfig config;
    config.vocab_size = 257;
    config.hidden_size = 32;
    config.num_hidden_layers = 2;
    config.num_heads = 2;
    config.num_slots = 8;
    config.eos_token_id = 256;
    adjust(config);
    return config;
  }

  // `model` saved as dir_/model with a byte tokenizer.
  fs::path save_model_folder(lintime::models::GsaModel& model) {
    const fs::path folder = dir_ / "model";
    lintime::io::save_model_folder(model.named_parameters(), model.config().to_json(), folder.string());
    write_byte_tokenizer(folder);
    return folder;
  }

  // tiny_gsa_config's model with weights drawn from seed 4, saved as dir_/model.
  template <typename Adjust>
  fs::path tiny_gsa_folder(Adjust adjust) {
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(4);
    lintime::models::GsaModel model(tiny_gsa_config(adjust), generator);
    return save_model_folder(model);
  }

  // A tiny config: 16 steps of a 1-layer GSA model, no early stop.
  std::string write_config(const std::string& extra_train = "", const std::string& name = "tiny.toml") {
    const fs::path path = dir_ / name;
    std::ofstream out(path);
    out << "[model]\nd_model = 16\nlayers = [\"gsa\"]\n[model.gsa]\nnum_heads = 2\nnum_slots = 8\n"
        << "gate_logit_normalizer = 1\nuse_short_conv = true\n\n"
        << "[data]\nvocab_size = 32\ntrain = [{ seq_len = 16, kv_pairs = 2, examples = 64 }]\n"
        << "test = [{ seq_len = 16, kv_pairs = 2, examples = 16 }, { seq_len = 24, kv_pairs = 3, examples = 8 }]\n\n"
        << "[train]\nbatch_size = 8\ntest_batch_size = 8\nepochs = 2\nlr = 3e-3\nschedule = \"warmup_cosine\"\n"
        << "warmup_steps = 3\neval_every = 5\nlog_every = 1\ntarget_accuracy = 1.0\n"
        << extra_train;
    return path.string();
  }

  static void expect_one_line_error(const CommandResult& result, const std::string& fragment) {
    EXPECT_NE(result.exit_code, 0) << result.out;
    EXPECT_NE(result.out.find("lintime: error: "), std::string::npos) << result.out;
    EXPECT_NE(result.out.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << result.out;
    size_t lines = 0;
    for (char c : result.out) lines += c == '\n';
    EXPECT_EQ(lines, 1u) << "expected exactly one line, got: " << result.out;
  }

  fs::path dir_;
};

std::map<std::string, at::Tensor> weights(const fs::path& run_dir) {
  auto loaded = lintime::io::load_safetensors((run_dir / "checkpoint" / "model.safetensors").string());
  return {loaded.begin(), loaded.end()};
}

// metrics.jsonl split into training records and evaluation records, each in file order.
struct MetricsByKind {
  std::vector<nlohmann::json> train, eval;
};

MetricsByKind metrics_by_step(const fs::path& file) {
  MetricsByKind records;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto record = nlohmann::json::parse(line);
    (record.value("eval", false) ? records.eval : records.train).push_back(record);
  }
  return records;
}

std::vector<int64_t> step_list(const std::vector<nlohmann::json>& records) {
  std::vector<int64_t> steps;
  for (const auto& record : records) steps.push_back(record.at("step").get<int64_t>());
  return steps;
}

std::vector<int64_t> step_list_1_to(int64_t last) {
  std::vector<int64_t> steps;
  for (int64_t step = 1; step <= last; ++step) steps.push_back(step);
  return steps;
}

int64_t trainer_step(const fs::path& run_dir) {
  std::ifstream in(run_dir / "checkpoint" / "trainer_state.json");
  return nlohmann::json::parse(in).at("step").get<int64_t>();
}

TEST_F(CliTest, HelpListsSubcommands) {
  auto result = run_lintime("--help");
  EXPECT_EQ(result.exit_code, 0);
  for (const char* command : {"train", "eval", "info", "bench"}) EXPECT_NE(result.out.find(command), std::string::npos);
  for (const char* command : {"train", "eval", "info", "bench"}) EXPECT_EQ(run_lintime(std::string(command) + " --help").exit_code, 0);
}

TEST_F(CliTest, UnknownConfigKeyIsOneClearLine) {
  auto config = write_config("lrr = 0.1\n");
  const auto out = dir_ / "out";
  auto result = run_errors("train " + config + " --out " + out.string());
  expect_one_line_error(result, "config key \"train.lrr\": unknown, expected one of batch_size");
  EXPECT_FALSE(fs::exists(out)) << "a failed run must not leave an output directory";
}

TEST_F(CliTest, WrongTypeIsOneClearLine) {
  expect_one_line_error(run_errors("train " + write_config() + " --set train.lr='\"fast\"' --out " + (dir_ / "o").string()),
                        "config key \"train.lr\": expected a number, got string \"fast\"");
  expect_one_line_error(run_errors("train " + write_config() + " --set train.epochs=1.5 --out " + (dir_ / "o").string()),
                        "config key \"train.epochs\": expected an integer, got number 1.5");
}

TEST_F(CliTest, ImpossibleMqarParametersAreRejected) {
  auto result = run_errors("train " + write_config() + " --set 'data.train=[{seq_len=16,kv_pairs=5,examples=8}]' --out " +
                    (dir_ / "o").string());
  expect_one_line_error(result, "kv_pairs");
  result = run_errors("train " + write_config() + " --set 'data.test=[{seq_len=64,kv_pairs=2,examples=8}]' --out " +
               (dir_ / "o").string());
  expect_one_line_error(result, "vocab");
}

TEST_F(CliTest, UnknownMixerIsRejectedWithKnownNames) {
  auto result = run_errors("train " + write_config() + " --set 'model.layers=[\"rwkv\"]' --out " + (dir_ / "o").string());
  expect_one_line_error(result, "rwkv");
  EXPECT_NE(result.out.find("gsa"), std::string::npos) << result.out;
}

// CUDA graphs are recorded only where the run allows it: `on` names what prevents it; `auto`
// trains as `off` there.
TEST_F(CliTest, CudaGraphOnSaysWhatPreventsIt) {
  const auto out = dir_ / "graph";
  expect_one_line_error(run_errors("train " + write_config() + " --device cpu --cuda-graph on --out " + out.string()),
                        "--cuda-graph on: cannot record this run's steps: the run is on cpu, not a CUDA device");
  EXPECT_FALSE(fs::exists(out)) << "a refused run must not leave an output directory";
  expect_one_line_error(run_errors("train " + write_config() + " --device cpu --cuda-graph sometimes --out " + out.string()),
                        "--cuda-graph");
}

TEST_F(CliTest, MissingAndMalformedFiles) {
  expect_one_line_error(run_errors("train " + (dir_ / "nope.toml").string()), "does not exist");
  const auto bad = dir_ / "bad.toml";
  std::ofstream(bad) << "[model]\nd_model = = 3\n";
  expect_one_line_error(run_errors("train " + bad.string() + " --out " + (dir_ / "o").string()), "bad.toml:2");
  expect_one_line_error(run_errors("eval " + dir_.string()), "not a lintime checkpoint");
  const auto bad_json = dir_ / "config.json";
  std::ofstream(bad_json) << "{\"model_type\": \"gsa\", \"hidden_size\": \"big\"}";
  expect_one_line_error(run_errors("info " + bad_json.string()), "hidden_size");
  std::ofstream(bad_json) << "{not json";
  expect_one_line_error(run_errors("info " + bad_json.string()), "not valid JSON");
  expect_one_line_error(run_errors("plot " + (dir_ / "nothing").string()),
                        "plot: '" + (dir_ / "nothing").string() + "' is not a run: expected a run directory");
  std::ofstream(bad_json) << "{\"model_type\": \"llama\", \"vocab_size\": -5}";
  expect_one_line_error(run_errors("convert " + dir_.string() + " " + (dir_ / "converted").string() + " --to gsa"),
                        bad_json.string() + ": config key \"vocab_size\"");
}

TEST_F(CliTest, InfoPrintsParametersAndStateBytes) {
  auto result = run_lintime("info " + write_config());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  // One GSA layer, d 16, 2 heads (K = V = 8), 8 slots, fp32: state = 2 * (8*8 + 8*8) * 4 bytes.
  EXPECT_NE(result.out.find("recurrent state: " + std::to_string(2 * (8 * 8 + 8 * 8) * 4 + 3 * 3 * 16 * 4)),
            std::string::npos)
      << result.out;
  const auto fla_config = dir_ / "gsa_1p3b.json";
  std::ofstream(fla_config) << R"({"model_type": "gsa", "hidden_size": 2048, "num_hidden_layers": 24,
      "num_heads": 4, "num_slots": 64, "vocab_size": 32000})";
  result = run_lintime("info " + fla_config.string());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("recurrent state: " + std::to_string(24LL * 2 * 64 * 2048 * 4)), std::string::npos)
      << result.out;
}

// A sweep file: one line per (model, point) with its parameters and state bytes.
TEST_F(CliTest, InfoListsASweepsPoints) {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  ASSERT_NE(source, nullptr);
  const auto result = run_lintime("info " + std::string(source) + "/configs/mqar/cpu-figure.toml");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("(30 runs: 2 rates each)"), std::string::npos) << result.out;
  size_t rows = 0;
  for (const char* model : {"GSA ", "GLA ", "RetNet ", "HGRN2 ", "Mamba "}) {
    for (size_t at = result.out.find(std::string("\n") + model); at != std::string::npos;
         at = result.out.find(std::string("\n") + model, at + 1))
      ++rows;
  }
  EXPECT_EQ(rows, 15u) << result.out;  // 5 models x 3 sizes
  EXPECT_NE(result.out.find("d64"), std::string::npos) << result.out;
}

// HazyResearch's based-360m configuration (GPT-2 fields and three mixer objects).
TEST_F(CliTest, InfoReadsABasedLanguageModelConfig) {
  const auto config = dir_ / "based_360m.json";
  std::ofstream(config) << lintime::testing::based_360m_config().dump();
  const auto result = run_lintime("info " + config.string());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  // d 1024, H 2048, 17 conv, 5 linear attention, 5 sliding-window layers, vocab 50264 (tied):
  // blocks 27 (2d + 3Hd) + conv 17 (6d² + 6d + 5d) + LA 5 (2·16·16·d + 2d²) + SWA 5 (4d²) + 50264 d + d.
  EXPECT_NE(result.out.find("parameters: 362620928"), std::string::npos) << result.out;
  // fp32 values: conv 17 · 2 · 2048, LA 5 · 16 · 65 · 153 (S and z), SWA 5 · 2 · 1024 · 65.
  EXPECT_NE(result.out.find("recurrent state: 6123328 bytes per sequence"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("sliding window of 65 keys"), std::string::npos) << result.out;
}

// based.md §6: the 2-layer MQAR model [BaseConv k = 3, BASED d = 64, d' = 16].
TEST_F(CliTest, InfoPrintsTheBasedMqarModelsStateBytes) {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  ASSERT_NE(source, nullptr);
  const auto result = run_lintime("info " + std::string(source) + "/configs/mqar/based-small.toml");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("recurrent state: 40548 bytes per sequence"), std::string::npos) << result.out;
}

TEST_F(CliTest, TrainEvalAndResumeEqualsUninterrupted) {
  const auto config = write_config();
  const auto full = dir_ / "full", resumed = dir_ / "resumed";
  // zoology's protocol options are on: the dropout masks must resume exactly too.
  const std::string zoology = " --set model.embed_dropout=0.1 --set train.decay_all_parameters=true";
  auto result = run_lintime("train " + config + zoology + " --device cpu --out " + full.string());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("steps: 16 of 16"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("L=24 N=3"), std::string::npos) << "per-segment accuracy missing: " << result.out;
  for (const char* file : {"metrics.jsonl", "result.json", "checkpoint/model.safetensors",
                           "checkpoint/optimizer.safetensors", "checkpoint/trainer_state.json", "checkpoint/config.json"})
    EXPECT_TRUE(fs::exists(full / file)) << file;

  result = run_lintime("train " + config + zoology + " --device cpu --out " + resumed.string() + " --stop-after-steps 7");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("steps: 7 of 16"), std::string::npos) << result.out;
  // Training into a directory that holds a checkpoint needs --resume.
  expect_one_line_error(run_errors("train " + config + zoology + " --device cpu --out " + resumed.string()), "--resume");
  // A changed config cannot resume.
  expect_one_line_error(run_errors("train " + config + zoology + " --set train.lr=1e-2 --device cpu --resume --out " + resumed.string()),
                        "different config");
  // What a kill after the checkpoint leaves: the log of two more steps and half a line, a stale
  // result.json, a half-written checkpoint.tmp. The resume must give the uninterrupted run's folder.
  {
    std::ifstream full_log(full / "metrics.jsonl");
    std::ofstream log(resumed / "metrics.jsonl", std::ios::app);
    for (std::string line; std::getline(full_log, line);) {
      const auto step = nlohmann::json::parse(line).at("step").get<int64_t>();
      if (step == 8 || step == 9) log << line << "\n";
    }
    log << "{\"step\": 10, \"loss\": 1.";
  }
  std::ofstream(resumed / "result.json") << R"({"stale": true})";
  fs::create_directories(resumed / "checkpoint.tmp");
  result = run_lintime("train " + config + zoology + " --device cpu --resume --out " + resumed.string());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("steps: 16 of 16"), std::string::npos) << result.out;
  EXPECT_FALSE(fs::exists(resumed / "checkpoint.tmp"));
  {
    std::ifstream in(resumed / "result.json");
    EXPECT_FALSE(nlohmann::json::parse(in).contains("stale"));
  }

  auto expected = weights(full), actual = weights(resumed);
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto& [name, tensor] : expected) {
    ASSERT_TRUE(actual.count(name)) << name;
    EXPECT_TRUE(at::equal(tensor, actual[name])) << name << " differs after resume";
  }
  // Training is deterministic, so equal weights alone would not tell a resume from a rerun:
  // the resumed run must have logged only the remaining steps, once each, after the stopped
  // run's (the metrics file is appended to), with the losses and rates of the uninterrupted run.
  const auto full_log = metrics_by_step(full / "metrics.jsonl"), resumed_log = metrics_by_step(resumed / "metrics.jsonl");
  for (const auto* log : {&full_log, &resumed_log}) {
    EXPECT_EQ(step_list(log->train), step_list_1_to(16)) << "train records by step, in file order";
    EXPECT_EQ(step_list(log->eval), (std::vector<int64_t>{5, 10, 15, 16})) << "eval records by step";
  }
  for (size_t i = 0; i < full_log.train.size() && i < resumed_log.train.size(); ++i) {
    EXPECT_EQ(full_log.train[i].at("loss"), resumed_log.train[i].at("loss")) << "step " << i + 1;
    EXPECT_EQ(full_log.train[i].at("lr"), resumed_log.train[i].at("lr")) << "step " << i + 1;
  }
  EXPECT_EQ(trainer_step(resumed), 16);
  auto a = run_lintime("eval " + full.string() + " --device cpu"), b = run_lintime("eval " + resumed.string() + " --device cpu");
  ASSERT_EQ(a.exit_code, 0) << a.out;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out.find("overall"), std::string::npos);
  expect_one_line_error(run_errors("train " + config + " --device cpu --resume --out " + (dir_ / "none").string()),
                        "no checkpoint");
}

// A resume must continue from the optimizer state in the checkpoint, not from fresh moments:
// the same stopped run resumed with its AdamW second moments scaled by 100 ends elsewhere,
// and with them untouched ends on the uninterrupted run's weights.
TEST_F(CliTest, ResumeContinuesFromTheStoredOptimizerState) {
  const auto config = write_config();
  const auto full = dir_ / "full", intact = dir_ / "intact", altered = dir_ / "altered";
  ASSERT_EQ(run_lintime("train " + config + " --device cpu --out " + full.string()).exit_code, 0);
  auto result = run_lintime("train " + config + " --device cpu --out " + intact.string() + " --stop-after-steps 7");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  fs::copy(intact, altered, fs::copy_options::recursive);
  const std::string optimizer_file = (altered / "checkpoint" / "optimizer.safetensors").string();
  auto optimizer_state = lintime::io::load_safetensors(optimizer_file);
  int64_t scaled = 0;
  for (auto& [name, tensor] : optimizer_state) {
    if (name.size() > 11 && name.compare(name.size() - 11, 11, ".exp_avg_sq") == 0) {
      tensor = tensor * 100;
      ++scaled;
    }
  }
  ASSERT_GT(scaled, 0) << "no .exp_avg_sq tensors in " << optimizer_file;
  std::vector<std::pair<std::string, at::Tensor>> list(optimizer_state.begin(), optimizer_state.end());
  lintime::io::save_safetensors(optimizer_file, list, {{"step_count", "7"}});
  for (const auto& run : {intact, altered}) {
    result = run_lintime("train " + config + " --device cpu --resume --out " + run.string());
    ASSERT_EQ(result.exit_code, 0) << result.out;
  }
  auto expected = weights(full), from_intact = weights(intact), from_altered = weights(altered);
  int64_t differing = 0;
  for (const auto& [name, tensor] : expected) {
    EXPECT_TRUE(at::equal(tensor, from_intact.at(name))) << name;
    differing += !at::equal(tensor, from_altered.at(name));
  }
  EXPECT_EQ(differing, static_cast<int64_t>(expected.size()))
      << "every weight must change when the stored second moments do (the resume must load them)";
}

TEST_F(CliTest, CheckpointWithWrongShapesIsRejectedWholeAndNamesTheTensor) {
  const auto config = write_config();
  const auto out = dir_ / "run";
  ASSERT_EQ(run_lintime("train " + config + " --device cpu --stop-after-steps 2 --out " + out.string()).exit_code, 0);
  // Edit the stored config so that the model it describes no longer matches the weights.
  const auto config_json = out / "checkpoint" / "config.json";
  std::ifstream in(config_json);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const auto at = text.find("\"d_model\": 16");
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, std::string("\"d_model\": 16").size(), "\"d_model\": 32");
  std::ofstream(config_json) << text;
  auto result = run_errors("eval " + out.string() + " --device cpu");
  expect_one_line_error(result, "has shape");
  EXPECT_NE(result.out.find("expects"), std::string::npos) << result.out;
}

TEST_F(CliTest, LearningRateSweepIsOneCommand) {
  const auto config = write_config();
  auto result = run_lintime("train " + config + " --device cpu --set 'train.lr_sweep=[1e-3,3e-3]' --set train.epochs=1 --out " +
                    (dir_ / "sweep").string());
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("learning-rate sweep"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("<- best"), std::string::npos) << result.out;
  EXPECT_TRUE(fs::exists(dir_ / "sweep" / "lr-0.001" / "checkpoint" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "sweep" / "lr-0.003" / "result.json"));
}

// A byte-level tokenizer whose ids are the byte values (no merges) and <|endoftext|> = 256.
void write_byte_tokenizer(const fs::path& folder) {
  nlohmann::json vocab;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    const char32_t symbol = printable ? char32_t(b) : char32_t(256 + extra++);
    std::string utf8;
    if (symbol < 0x80) {
      utf8 += static_cast<char>(symbol);
    } else {
      utf8 += static_cast<char>(0xC0 | (symbol >> 6));
      utf8 += static_cast<char>(0x80 | (symbol & 0x3F));
    }
    vocab[utf8] = b;
  }
  vocab["<|endoftext|>"] = 256;
  std::ofstream(folder / "vocab.json") << vocab.dump();
  std::ofstream(folder / "merges.txt") << "#version: 0.2\n";
}

// The text a byte-tokenizer model (257 ids, EOS 256) continues `prompt` with under greedy
// decoding, one full forward per new token, up to `steps` tokens or EOS.
std::string greedy_byte_continuation(const std::function<at::Tensor(const at::Tensor&)>& forward,
                                     const std::string& prompt, int steps) {
  at::NoGradGuard no_grad;
  std::vector<int64_t> sequence(prompt.begin(), prompt.end());
  std::string continuation;
  for (int step = 0; step < steps; ++step) {
    const at::Tensor out = forward(at::tensor(sequence, at::kLong).unsqueeze(0));
    const int64_t next = out[0][-1].slice(0, 0, 257).argmax().item<int64_t>();
    if (next == 256) break;
    sequence.push_back(next);
    continuation += static_cast<char>(next);
  }
  return continuation;
}

// Numbers beyond what a flag allows, and non-finite logits, are one line each (issue 25): an
// integer flag is checked on its text (a seed beyond 64 bits was clamped silently), counts are
// bounded by what the machine and the model allow, an explicit 0 that used to mean "the
// default" is refused, an empty prompt is named as such, and NaN weights stop generation with
// the layer whose output first stops being finite.
TEST_F(CliTest, OutOfRangeFlagsAndNonFiniteLogitsAreOneLine) {
  const fs::path folder = tiny_gsa_folder([](lintime::models::GsaConfig&) {});
  const std::string generate = "generate " + folder.string() + " --device cpu --prompt hi";
  expect_one_line_error(run_errors(generate + " --seed 99999999999999999999"),
                        "--seed: expected an integer in [0, 2^64 - 1], got '99999999999999999999'");
  expect_one_line_error(run_errors(generate + " --seed -1"), "--seed: expected an integer in [0, 2^64 - 1], got '-1'");
  expect_one_line_error(run_errors(generate + " --max-new-tokens 1000000000000"),
                        "--max-new-tokens: expected an integer in [1, 16777216], got '1000000000000'");
  expect_one_line_error(run_errors(generate + " --batch 0"), "--batch: expected an integer in [1, 1048576], got '0'");
  expect_one_line_error(run_errors("generate " + folder.string() + " --device cpu --prompt ''"),
                        "--prompt: the prompt is empty; expected some text");
  const auto config_file = write_config();
  expect_one_line_error(run_errors("train " + config_file + " --device cpu --stop-after-steps 0 --out " +
                                   (dir_ / "never").string()),
                        "--stop-after-steps: expected an integer in [1, 1099511627776], got '0'");
  expect_one_line_error(run_errors("train " + config_file + " --device cpu --threads 100000 --out " +
                                   (dir_ / "never").string()),
                        "--threads: expected an integer in [0, 1024], got '100000'");
  expect_one_line_error(run_errors("train " + config_file + " --device cpu --set train.grad_clip=nan --out " +
                                   (dir_ / "never").string()),
                        "config key \"train.grad_clip\": expected a finite number (<= 0: no clipping), got nan");
  expect_one_line_error(run_errors("train " + config_file + " --device cpu --set train.target_accuracy=2 --out " +
                                   (dir_ / "never").string()),
                        "config key \"train.target_accuracy\": expected an accuracy in (0, 1]");
  expect_one_line_error(run_errors("train " + config_file + " --device cpu --set train.schedule=warmup_cosine --set " +
                                   "train.warmup_steps=100000 --out " + (dir_ / "never").string()),
                        "config key \"train.warmup_steps\": 100000 warm-up steps in a run of ");
  EXPECT_FALSE(fs::exists(dir_ / "never"));
  std::ofstream(dir_ / "text.txt") << "some text to score";
  expect_one_line_error(run_errors("perplexity " + folder.string() + " " + (dir_ / "text.txt").string() +
                                   " --device cpu --stride 0"),
                        "--stride: expected an integer in [1, 16777216], got '0'");
  expect_one_line_error(run_errors("frobnicate"), "unknown command 'frobnicate'; expected one of train, eval");
  // Sizes and counts of every command are integers in a stated range, reals positive and finite.
  expect_one_line_error(run_errors("bench mqar --device cpu --steps 0"), "--steps: expected an integer in [1, 1048576], got '0'");
  expect_one_line_error(run_errors("bench gsa --heads -2"), "--heads: expected an integer in [1, 65536], got '-2'");
  expect_one_line_error(run_errors("train " + config_file + " --timeout 0 --out " + (dir_ / "never").string()),
                        "--timeout: expected a positive number, got '0'");
  expect_one_line_error(run_errors("train " + config_file + " --bucket-mb inf --out " + (dir_ / "never").string()),
                        "--bucket-mb: expected a positive number, got 'inf'");
  expect_one_line_error(run_errors("serve " + folder.string() + " --prefix-cache-mb 99999999999999"),
                        "--prefix-cache-mb: expected an integer in [0, 1073741824], got '99999999999999'");
  // Booleans are true or false; reals and names are written out ("" read as 0 or the default).
  expect_one_line_error(run_errors("serve " + folder.string() + " --cuda-graphs 2"),
                        "--cuda-graphs: expected true or false, got '2'");
  expect_one_line_error(run_errors(generate + " --temperature ''"), "--temperature: expected a finite number, got ''");
  expect_one_line_error(run_errors("train " + config_file + " --out ''"), "--out: expected a non-empty value, got ''");
  expect_one_line_error(run_errors(generate + " --top-k 99999999999999999999"),
                        "--top-k: expected an integer in [0, 2147483648], got '99999999999999999999'");
  // A folder where a file is expected and a file where a folder is.
  std::ofstream(dir_ / "a-file") << "x";
  expect_one_line_error(run_errors("generate " + (dir_ / "a-file").string() + " --prompt hi"),
                        "model folder '" + (dir_ / "a-file").string() + "' is a file, not a folder");
  expect_one_line_error(run_errors("perplexity " + folder.string() + " " + dir_.string()),
                        "TEXT_FILE: File is actually a directory: " + dir_.string());
  std::ofstream(dir_ / "latin1.txt") << "caf\xe9";
  expect_one_line_error(run_errors("perplexity " + folder.string() + " " + (dir_ / "latin1.txt").string() + " --device cpu"),
                        "perplexity: '" + (dir_ / "latin1.txt").string() + "': text is not valid UTF-8");
  expect_one_line_error(run_errors("train " + dir_.string() + " --device cpu"),
                        "config: '" + dir_.string() + "' is a folder (expected a TOML file)");
  expect_one_line_error(run_errors("train " + config_file + " --device cpu --out " + (dir_ / "a-file").string()),
                        "--out '" + (dir_ / "a-file").string() + "' is a file, not a folder");
  // Each slot or queue place may hold an HTTP worker thread: a million of them was a million threads.
  expect_one_line_error(run_errors("serve " + folder.string() + " --max-sequences 1048576"),
                        "--max-sequences: expected an integer in [1, 4096], got '1048576'");
  expect_one_line_error(run_errors("serve " + folder.string() + " --max-queue 5000"),
                        "--max-queue: expected an integer in [0, 4096], got '5000'");
  expect_one_line_error(run_errors("tokenize --tokenizer x y --out z --eos-id -1"),
                        "--eos-id: expected an integer in [0, 2147483647], got '-1'");

  // NaN in layer 1's output projection: generation stops and names the layer.
  auto tensors = lintime::io::load_safetensors((folder / "model.safetensors").string());
  tensors.at("model.layers.1.attn.o_proj.weight")[0][0] = std::nan("");
  lintime::io::save_safetensors((folder / "model.safetensors").string(), {tensors.begin(), tensors.end()});
  expect_one_line_error(run_errors(generate + " --max-new-tokens 4"),
                        "generate: the model's logits are not finite (NaN or inf) at step 1; the first non-finite "
                        "values come from layer 1 (gsa)");
}

TEST_F(CliTest, ForwardAndGenerateRunAGsaModelFolder) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(4);
  lintime::models::GsaModel model(tiny_gsa_config([](lintime::models::GsaConfig& c) {
                                    c.num_kv_heads = 1;
                                    c.initializer_range = 0.1;
                                  }),
                                  generator);
  const fs::path folder = save_model_folder(model);

  // forward: the logits of the model for the given ids.
  const at::Tensor ids = at::randint(257, {2, 9}, at::kLong);
  lintime::io::save_safetensors((dir_ / "ids.safetensors").string(), {{"input_ids", ids}});
  auto result = run_lintime("forward " + folder.string() + " --input-ids " + (dir_ / "ids.safetensors").string() +
                            " --out " + (dir_ / "logits.safetensors").string() + " --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  at::Tensor expected;
  {
    at::NoGradGuard no_grad;
    expected = model.forward(ids);
  }
  const at::Tensor logits = lintime::io::load_safetensors((dir_ / "logits.safetensors").string()).at("logits");
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 9, 257}));
  // The same float32 ops on the same thread count (the child inherits the environment): equal bits.
  EXPECT_TRUE(at::equal(logits, expected)) << "relative max error " << lintime::testing::relative_max_error(logits, expected);

  // generate --greedy: the tokens a full forward per step picks, up to EOS or the limit.
  const std::string continuation =
      greedy_byte_continuation([&](const at::Tensor& x) { return model.forward(x); }, "hello", 12);
  result = run_stdout("generate " + folder.string() + " --prompt hello --max-new-tokens 12 --greedy --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_EQ(result.out, continuation + "\n");
  result = run_errors("generate " + folder.string() + " --prompt hello --max-new-tokens 3 --seed 1 --top-k 5 --top-p 0.9 --batch 2 --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("prompt 5 tokens, batch 2"), std::string::npos) << result.out;

  // perplexity: one window holding the whole text is exp(mean cross-entropy of a full forward).
  const std::string text = "the quick brown fox jumps over the lazy dog; the end.";
  std::ofstream(dir_ / "text.txt") << text;
  std::vector<int64_t> text_ids(text.begin(), text.end());
  double expected_nll = 0;
  {
    at::NoGradGuard no_grad;
    const at::Tensor all = at::tensor(text_ids, at::kLong);
    const at::Tensor log_probs = model.forward(all.unsqueeze(0)).squeeze(0).to(at::kDouble).log_softmax(-1);
    expected_nll = -log_probs.slice(0, 0, all.size(0) - 1).gather(1, all.slice(0, 1).unsqueeze(1)).mean().item<double>();
  }
  result = run_stdout("perplexity " + folder.string() + " " + (dir_ / "text.txt").string() + " --context 64 --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  char expected_line[160];
  std::snprintf(expected_line, sizeof expected_line, "perplexity %.4f over %zu tokens", std::exp(expected_nll), text.size() - 1);
  EXPECT_NE(result.out.find(expected_line), std::string::npos) << result.out << " expected " << expected_line;
  result = run_stdout("perplexity " + folder.string() + " " + (dir_ / "text.txt").string() + " --context 16 --stride 8 --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("over " + std::to_string(text.size() - 1) + " tokens"), std::string::npos) << result.out;
  expect_one_line_error(run_errors("perplexity " + folder.string() + " " + (dir_ / "text.txt").string() + " --context 8 --stride 9"),
                        "--stride must lie in [1, --context = 8]");

  // Bad input: one line, non-zero exit, no output file.
  expect_one_line_error(run_errors("forward " + folder.string() + " --input-ids " + (dir_ / "none.safetensors").string() +
                                   " --out " + (dir_ / "x.safetensors").string() + " --device cpu"),
                        "none.safetensors");
  lintime::io::save_safetensors((dir_ / "big.safetensors").string(), {{"input_ids", at::full({1, 3}, 300, at::kLong)}});
  expect_one_line_error(run_errors("forward " + folder.string() + " --input-ids " + (dir_ / "big.safetensors").string() +
                                   " --out " + (dir_ / "x.safetensors").string() + " --device cpu"),
                        "expected token ids in [0, 257)");
  EXPECT_FALSE(fs::exists(dir_ / "x.safetensors"));
  expect_one_line_error(run_errors("generate " + folder.string() + " --prompt a --prompt-file " +
                                   (dir_ / "big.safetensors").string() + " --device cpu"),
                        "exactly one of --prompt and --prompt-file");
  expect_one_line_error(run_errors("generate " + folder.string() + " --prompt a --top-p 0 --device cpu"),
                        "--top-p must lie in (0, 1]");
  fs::remove(folder / "vocab.json");
  expect_one_line_error(run_errors("generate " + folder.string() + " --prompt a --device cpu"), "holds no tokenizer");
  std::ofstream(folder / "config.json") << R"({"model_type": "mamba"})";
  expect_one_line_error(run_errors("forward " + folder.string() + " --input-ids " + (dir_ / "ids.safetensors").string() +
                                   " --out " + (dir_ / "x.safetensors").string() + " --device cpu"),
                        "model_type \"mamba\" cannot be run yet");
}

TEST_F(CliTest, ForwardAndGenerateRunABasedModelFolder) {
  nlohmann::json config = lintime::testing::tiny_based_config();  // conv, linear attention, window, conv
  config["vocab_size"] = 257;
  const fs::path folder = dir_ / "based";
  fs::create_directories(folder);
  std::ofstream(folder / "config.json") << config.dump();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(2);
  lintime::models::BasedModel model(lintime::models::BasedConfig::from_json(config), generator);
  lintime::io::save_safetensors((folder / "model.safetensors").string(), model.named_parameters());
  write_byte_tokenizer(folder);

  const at::Tensor ids = at::randint(257, {1, 12}, at::kLong);
  lintime::io::save_safetensors((dir_ / "ids.safetensors").string(), {{"input_ids", ids}});
  auto result = run_lintime("forward " + folder.string() + " --input-ids " + (dir_ / "ids.safetensors").string() +
                            " --out " + (dir_ / "logits.safetensors").string() + " --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  at::NoGradGuard no_grad;
  const at::Tensor logits = lintime::io::load_safetensors((dir_ / "logits.safetensors").string()).at("logits");
  EXPECT_EQ(logits.size(2), 264);  // vocabulary padded to a multiple of 8
  const at::Tensor expected = model.forward(ids);
  EXPECT_TRUE(at::equal(logits, expected)) << "relative max error " << lintime::testing::relative_max_error(logits, expected);

  // Greedy generation picks, among the tokenizer's 257 ids, what a full forward per step picks.
  const std::string continuation =
      greedy_byte_continuation([&](const at::Tensor& x) { return model.forward(x); }, "hi", 10);
  result = run_stdout("generate " + folder.string() + " --prompt hi --max-new-tokens 10 --greedy --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_EQ(result.out, continuation + "\n");
  result = run_errors("generate " + folder.string() + " --prompt hi --max-new-tokens 2 --device cpu");
  EXPECT_NE(result.out.find("BASED (HazyResearch)"), std::string::npos) << result.out;
}

TEST_F(CliTest, BenchGenerateKeepsGsaStateFlatWhileTheKvCacheGrows) {
  // Throughput numbers are not checked (a benchmark); the state each run reports is: GSA's is
  // the same after 4 and 40 new tokens, the Transformer's KV cache holds prompt + new tokens.
  const auto result = run_stdout("bench generate --arch gsa,gla,llama --preset tiny --batches 2 --prompt-length 16 "
                                 "--new-tokens 4,40 --dtype float32 --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  std::map<std::pair<std::string, int64_t>, nlohmann::json> runs;
  std::istringstream lines(result.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto json = nlohmann::json::parse(line);
    runs[{json.at("arch").get<std::string>(), json.at("new_tokens").get<int64_t>()}] = json;
  }
  ASSERT_EQ(runs.size(), 6u) << result.out;
  // tiny GSA: 2 layers, 4 heads of 32 dims, 16 slots, fp32: K×M + M×V numbers per head.
  const int64_t gsa_bytes = 2 * 2 * 4 * (32 * 16 + 16 * 32) * 4;
  // tiny Transformer++: 2 layers, keys and values of width 128, fp32, per token.
  const int64_t kv_bytes_per_token = 2 * 2 * 2 * 128 * 4;
  auto state_bytes = [&](const std::string& arch, int64_t new_tokens) {
    return runs[std::make_pair(arch, new_tokens)].at("state_bytes").get<int64_t>();
  };
  EXPECT_EQ(state_bytes("gsa", 4), gsa_bytes);
  EXPECT_EQ(state_bytes("gsa", 40), gsa_bytes);
  // tiny GLA: 2 layers, 4 heads of 16 keys and 32 values, fp32.
  const int64_t gla_bytes = 2 * 2 * 4 * 16 * 32 * 4;
  EXPECT_EQ(state_bytes("gla", 4), gla_bytes);
  EXPECT_EQ(state_bytes("gla", 40), gla_bytes);
  EXPECT_EQ(state_bytes("llama", 4), kv_bytes_per_token * (16 + 4));
  EXPECT_EQ(state_bytes("llama", 40), kv_bytes_per_token * (16 + 40));
  for (const auto& [key, json] : runs) {
    EXPECT_GT(json.at("decode_tokens_per_s").get<double>(), 0.0) << key.first;
    EXPECT_GT(json.at("ttft_ms").get<double>(), 0.0) << key.first;
  }
}

TEST_F(CliTest, InfoCountsLlamaAndMistralParametersAsTheirCheckpoints) {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  for (const std::string name : {"llama", "mistral"}) {
    const fs::path folder = fs::path(source ? source : ".") / "tests" / "fixtures" / "hf_parity" / name;
    ASSERT_TRUE(fs::exists(folder / "model.safetensors")) << folder;
    int64_t stored = 0;  // what transformers saved (a tied head is stored once)
    for (const auto& [tensor_name, tensor] : lintime::io::load_safetensors((folder / "model.safetensors").string()))
      stored += tensor.numel();
    const auto result = run_stdout("info " + folder.string());
    ASSERT_EQ(result.exit_code, 0) << result.out;
    EXPECT_NE(result.out.find("parameters: " + std::to_string(stored) + "\n"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("KV cache:"), std::string::npos) << result.out;
  }
}

TEST_F(CliTest, GenerateRunsAMistralFolderFromItsKvCache) {
  // Greedy generation through prefill + KV-cache steps (window 4, shorter than the text) picks
  // what a full forward per step picks.
  lintime::models::LlamaConfig config;
  config.model_type = "mistral";
  config.vocab_size = 257;
  config.hidden_size = 32;
  config.intermediate_size = 48;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 8;
  config.sliding_window = 4;
  config.initializer_range = 0.2;
  config.eos_token_ids = {256};
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(6);
  lintime::models::LlamaModel model(config, generator);
  const fs::path folder = dir_ / "mistral";
  lintime::io::save_model_folder(model.named_parameters(), model.config().to_json(), folder.string());
  write_byte_tokenizer(folder);
  const std::string continuation =
      greedy_byte_continuation([&](const at::Tensor& x) { return model.forward(x); }, "hello", 12);
  ASSERT_GT(5 + continuation.size(), 9u) << "the continuation must run past the window to test it";
  const auto result = run_stdout("generate " + folder.string() + " --prompt hello --max-new-tokens 12 --greedy --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_EQ(result.out, continuation + "\n");
}

TEST_F(CliTest, GenerateRunsALlamaFolderWithItsSentencePieceTokenizer) {
  // Llama 2's tokenizer.model from ../shared/data: generate feeds BOS + the prompt's pieces,
  // decodes greedily from the KV cache and prints the pieces' text, as a full forward per step
  // through the same tokenizer gives it.
  LINTIME_REQUIRE_SHARED_DATA(data, "llama2-tokenizer.model");
  lintime::models::LlamaConfig config;
  config.vocab_size = 32000;
  config.hidden_size = 16;
  config.intermediate_size = 32;
  config.num_hidden_layers = 1;
  config.num_attention_heads = 2;
  config.num_key_value_heads = 1;
  config.initializer_range = 0.5;  // tokens far apart in the logits, so greedy steps are not near ties
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(12);
  lintime::models::LlamaModel model(config, generator);
  const fs::path folder = dir_ / "llama";
  lintime::io::save_model_folder(model.named_parameters(), model.config().to_json(), folder.string());
  fs::copy_file(fs::path(data) / "llama2-tokenizer.model", folder / "tokenizer.model");

  const std::string prompt = "The quick brown fox";
  const auto tokenizer = lintime::text::load_tokenizer(folder.string());
  std::vector<int64_t> sequence = tokenizer->encode(prompt);
  sequence.insert(sequence.begin(), 1);  // BOS
  std::vector<int64_t> generated;
  {
    at::NoGradGuard no_grad;
    for (int step = 0; step < 10; ++step) {
      const at::Tensor logits = model.forward(at::tensor(sequence, at::kLong).unsqueeze(0));
      const int64_t next = logits[0][-1].argmax().item<int64_t>();
      if (next == 2) break;  // EOS
      sequence.push_back(next);
      generated.push_back(next);
    }
  }
  ASSERT_FALSE(generated.empty());
  const auto result =
      run_stdout("generate " + folder.string() + " --prompt '" + prompt + "' --max-new-tokens 10 --greedy --device cpu");
  ASSERT_EQ(result.exit_code, 0) << result.out;
  EXPECT_EQ(result.out, tokenizer->decode(generated) + "\n");
}

}  // namespace
