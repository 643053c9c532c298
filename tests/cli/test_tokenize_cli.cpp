// `lintime tokenize` end to end: the same inputs give byte-identical shard directories with 1 and
// 4 threads; the shards hold exactly the documents, each followed by EOS, split into train and
// val; bad inputs get one line "lintime: error: ...", a non-zero exit and no manifest. A small
// byte-level BPE tokenizer is written by the test; tinyshakespeare with GPT-2's BPE needs
// ../shared/data (skipped without it, failing under CI).
#include "data/tokenize_corpus.h"
#include "io/token_shards.h"
#include "support/run_lintime.h"
#include "support/test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/wait.h>

namespace {

namespace fs = std::filesystem;
using lintime::testing::TempDir;

using lintime::testing::CommandResult;

// Runs the binary; stdout and stderr together, or stderr alone.
CommandResult run_lintime(const std::string& arguments, bool stderr_only = false) {
  return lintime::testing::run_lintime(arguments, stderr_only ? lintime::testing::Capture::stderr_only
                                                              : lintime::testing::Capture::both);
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void write_file(const fs::path& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

// GPT-2's byte symbols (bytes_to_unicode) as UTF-8.
std::string byte_symbol(int b) {
  static std::array<std::string, 256> symbols = [] {
    std::array<std::string, 256> table;
    int next = 0;
    for (int byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
      const unsigned code = printable ? byte : 256 + next++;
      std::string utf8;
      if (code < 0x80) {
        utf8 += static_cast<char>(code);
      } else {
        utf8 += static_cast<char>(0xC0 | (code >> 6));
        utf8 += static_cast<char>(0x80 | (code & 0x3F));
      }
      table[byte] = utf8;
    }
    return table;
  }();
  return symbols[b];
}

// A byte-level BPE folder: 256 byte tokens, three merges, and <|endoftext|> at `eos_id` (none when < 0).
void write_tokenizer(const fs::path& dir, int64_t eos_id) {
  fs::create_directories(dir);
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = b;
  vocab["th"] = 256;
  vocab["the"] = 257;
  vocab[byte_symbol(' ') + "the"] = 258;
  if (eos_id >= 0) vocab["<|endoftext|>"] = eos_id;
  write_file(dir / "vocab.json", vocab.dump());
  write_file(dir / "merges.txt", "#version: 0.2\nt h\nth e\n" + byte_symbol(' ') + " the\n");
}

void write_gzip(const fs::path& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(file);
}

// Every regular file under `dir` by name, with its bytes.
std::map<std::string, std::string> directory_bytes(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) files[entry.path().filename().string()] = read_bytes(entry.path());
  return files;
}

// The split's documents: its token stream cut after every EOS, decoded.
std::vector<std::string> split_documents(const fs::path& dir, const std::string& split, const lintime::text::Tokenizer& tokenizer) {
  auto set = lintime::io::TokenShardSet::open(dir.string(), split);
  std::vector<int64_t> tokens(set->tokens());
  set->read(0, set->tokens(), tokens.data());
  std::vector<std::string> documents;
  std::vector<int64_t> current;
  for (int64_t id : tokens) {
    if (id == set->manifest().eos_id) {
      documents.push_back(tokenizer.decode(current));
      current.clear();
    } else {
      current.push_back(id);
    }
  }
  EXPECT_TRUE(current.empty()) << "the stream of '" << split << "' does not end with EOS";
  std::vector<int64_t> starts;
  set->document_starts(0, set->tokens(), starts);
  EXPECT_EQ(starts.size(), documents.size());
  return documents;
}

class TokenizeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    write_tokenizer(dir_.path() + "/tokenizer", 259);
    write_tokenizer(dir_.path() + "/no_eos", -1);
    // 40 speeches over three inputs: a text file split on blank lines, JSON lines, gzip JSON lines.
    std::string play;
    nlohmann::json lines = nlohmann::json::array();
    for (int i = 0; i < 40; ++i) {
      std::string speech = "Speaker " + std::to_string(i) + ":\nthe theory of the " + std::string(i % 7 + 1, 'x') +
                           " is " + std::to_string(i * i) + " \xc3\xa9t\xc3\xa9.";
      speeches_.push_back(speech);
      if (i < 20) play += speech + "\n\n\n";
    }
    write_file(dir_.file("play.txt"), play);
    std::string jsonl, gz;
    for (int i = 20; i < 30; ++i) jsonl += nlohmann::json{{"text", speeches_[i]}}.dump() + "\n";
    for (int i = 30; i < 40; ++i) gz += nlohmann::json{{"text", speeches_[i]}, {"id", i}}.dump() + "\n";
    write_file(dir_.file("more.jsonl"), jsonl);
    write_gzip(dir_.file("rest.jsonl.gz"), gz);
    inputs_ = dir_.file("play.txt") + " " + dir_.file("more.jsonl") + " " + dir_.file("rest.jsonl.gz");
  }

  static void expect_one_line_error(const CommandResult& result, const std::string& fragment) {
    EXPECT_NE(result.exit_code, 0) << result.out;
    EXPECT_EQ(result.out.rfind("lintime: error: ", 0), 0u) << result.out;
    EXPECT_NE(result.out.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << result.out;
    EXPECT_EQ(std::count(result.out.begin(), result.out.end(), '\n'), 1) << "expected one line, got: " << result.out;
  }

  TempDir dir_;
  std::vector<std::string> speeches_;
  std::string inputs_;
};

TEST_F(TokenizeCli, ThreadCountDoesNotChangeTheShards) {
  const std::string common = "tokenize --tokenizer " + dir_.path() + "/tokenizer " + inputs_ +
                             " --split-blank-lines --val-fraction 0.25 --shard-tokens 300";
  const CommandResult one = run_lintime(common + " --threads 1 --out " + dir_.file("one"));
  ASSERT_EQ(one.exit_code, 0) << one.out;
  const CommandResult four = run_lintime(common + " --threads 4 --out " + dir_.file("four"));
  ASSERT_EQ(four.exit_code, 0) << four.out;
  EXPECT_NE(one.out.find("tokenize: wrote " + dir_.file("one") + ": train "), std::string::npos) << one.out;

  const auto files_one = directory_bytes(dir_.file("one")), files_four = directory_bytes(dir_.file("four"));
  ASSERT_GT(files_one.size(), 3u) << "expected several train shards, val shards and manifest.json";
  EXPECT_EQ(files_one.size(), files_four.size());
  for (const auto& [name, bytes] : files_one) {
    ASSERT_TRUE(files_four.count(name)) << name;
    EXPECT_TRUE(bytes == files_four.at(name)) << name << " differs between --threads 1 and --threads 4";
  }

  // The shards hold exactly the speeches, each once, in input order within a split.
  auto source = lintime::data::load_tokenizer_source(dir_.path() + "/tokenizer");
  const auto manifest = lintime::io::read_token_manifest(dir_.file("one"));
  EXPECT_EQ(manifest.eos_id, 259);
  EXPECT_EQ(manifest.dtype, lintime::io::TokenDtype::uint16);
  EXPECT_EQ(manifest.tokenizer.hash, source.identity.hash);
  EXPECT_EQ(manifest.tokenizer.vocab_size, 260);
  const auto train = split_documents(dir_.file("one"), "train", *source.tokenizer);
  const auto val = split_documents(dir_.file("one"), "val", *source.tokenizer);
  std::vector<std::string> expected_train, expected_val;
  for (size_t i = 0; i < speeches_.size(); ++i)
    (lintime::data::is_validation_document(static_cast<int64_t>(i), 0.25) ? expected_val : expected_train).push_back(speeches_[i]);
  EXPECT_EQ(train, expected_train);
  EXPECT_EQ(val, expected_val);
  EXPECT_FALSE(val.empty());
  EXPECT_EQ(manifest.splits.at("train").documents, static_cast<int64_t>(expected_train.size()));
}

TEST_F(TokenizeCli, ExplicitValidationInputsAndUint32Ids) {
  // No EOS in the tokenizer: --eos-id 70000 makes the ids need uint32.
  const CommandResult result =
      run_lintime("tokenize --tokenizer " + dir_.path() + "/no_eos/vocab.json " + dir_.file("play.txt") + " --val " +
                  dir_.file("more.jsonl") + " --eos-id 70000 --split-blank-lines --threads 2 --out " + dir_.file("out"));
  ASSERT_EQ(result.exit_code, 0) << result.out;
  const auto manifest = lintime::io::read_token_manifest(dir_.file("out"));
  EXPECT_EQ(manifest.dtype, lintime::io::TokenDtype::uint32);
  EXPECT_EQ(manifest.eos_id, 70000);
  EXPECT_EQ(manifest.splits.at("train").documents, 20);
  EXPECT_EQ(manifest.splits.at("val").documents, 10);
  EXPECT_EQ(manifest.splits.at("train").max_token_id, 70000);
  // The folder and its vocab.json name the same files: the same identity.
  EXPECT_EQ(manifest.tokenizer.hash, lintime::data::load_tokenizer_source(dir_.path() + "/no_eos").identity.hash);
}

TEST_F(TokenizeCli, BadInputsGiveOneLineAndNoManifest) {
  const std::string tokenizer = " --tokenizer " + dir_.path() + "/tokenizer";
  const std::string out = dir_.file("out");
  const auto manifest = fs::path(out) / "manifest.json";
  write_file(dir_.file("bad.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \"unterminated}\n");
  write_file(dir_.file("field.jsonl"), "{\"body\": \"no text\"}\n");
  write_file(dir_.file("broken.txt.gz"), read_bytes(dir_.file("rest.jsonl.gz")).substr(0, 30));
  write_file(dir_.file("empty.txt"), "");
  write_file(dir_.file("plain.txt.gz"), "plain text under a .gz name\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {tokenizer + " " + dir_.file("absent.txt"), "cannot read input '" + dir_.file("absent.txt") + "'"},
      {tokenizer + " " + dir_.file("bad.jsonl"), dir_.file("bad.jsonl") + ":2: not valid JSON"},
      {tokenizer + " " + dir_.file("field.jsonl"), dir_.file("field.jsonl") + ":1: no \"text\" field"},
      {tokenizer + " " + dir_.file("broken.txt.gz"), "cannot read input '" + dir_.file("broken.txt.gz") + "'"},
      {tokenizer + " " + dir_.file("empty.txt"), "no training documents"},
      {tokenizer + " " + dir_.file("plain.txt.gz"), "its name ends in .gz but it is not gzip-compressed"},
      {" --tokenizer " + dir_.path() + "/no_eos " + dir_.file("play.txt"), "has no EOS token: pass --eos-id N"},
      {" --tokenizer " + dir_.file("nothing") + " " + dir_.file("play.txt"), "tokenizer '" + dir_.file("nothing") + "' does not exist"},
      {tokenizer + " " + dir_.file("play.txt") + " --val-fraction 1.5", "--val-fraction must lie in [0, 1)"},
      {tokenizer + " " + dir_.file("play.txt") + " --val-fraction 0.01", "put none of the 1 documents into val"},
  };
  for (const auto& [arguments, fragment] : cases) {
    SCOPED_TRACE(arguments);
    expect_one_line_error(run_lintime("tokenize" + arguments + " --out " + out, true), fragment);
    EXPECT_FALSE(fs::exists(out)) << "a failed run leaves no folder it made";
  }
  // An existing shard directory is kept unless --overwrite.
  ASSERT_EQ(run_lintime("tokenize" + tokenizer + " " + dir_.file("play.txt") + " --out " + out).exit_code, 0);
  const std::string before = read_bytes(manifest);
  expect_one_line_error(run_lintime("tokenize" + tokenizer + " " + dir_.file("more.jsonl") + " --out " + out, true),
                        "already holds token shards (manifest.json): pass --overwrite");
  EXPECT_EQ(read_bytes(manifest), before);
  const CommandResult again =
      run_lintime("tokenize" + tokenizer + " " + dir_.file("more.jsonl") + " --overwrite --out " + out);
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_EQ(lintime::io::read_token_manifest(out).splits.at("train").documents, 10);
  // --overwrite of a run that then fails leaves no manifest behind.
  expect_one_line_error(run_lintime("tokenize" + tokenizer + " " + dir_.file("bad.jsonl") + " --overwrite --out " + out, true),
                        "not valid JSON");
  EXPECT_FALSE(fs::exists(manifest));
}

TEST(TokenizeCliSharedData, TokenizerSourcesHashTheirFiles) {
  LINTIME_REQUIRE_SHARED_DATA(data, "llama2-tokenizer.model");
  const auto sentencepiece = lintime::data::load_tokenizer_source(data + "/llama2-tokenizer.model");
  EXPECT_EQ(sentencepiece.identity.kind, "sentencepiece");
  EXPECT_EQ(sentencepiece.identity.vocab_size, 32000);
  EXPECT_EQ(sentencepiece.tokenizer->eos_id(), 2);
  EXPECT_EQ(sentencepiece.identity.hash, lintime::io::hash_files_fnv1a64({data + "/llama2-tokenizer.model"}));
  const auto gpt2 = lintime::data::load_tokenizer_source(data + "/gpt2-vocab.json");
  EXPECT_EQ(gpt2.files, (std::vector<std::string>{data + "/gpt2-vocab.json", data + "/gpt2-merges.txt"}));
  EXPECT_NE(gpt2.identity.hash, sentencepiece.identity.hash);
  const std::string error = lintime::testing::error_of([&] { lintime::data::load_tokenizer_source(data + "/README.md"); });
  EXPECT_NE(error.find("expected a model folder, a tokenizer.json, a tokenizer.model"), std::string::npos) << error;
}

TEST(TokenizeCliSharedData, TinyShakespeareWithGpt2IsThreadIndependent) {
  LINTIME_REQUIRE_SHARED_DATA(data, "tinyshakespeare.txt");
  ASSERT_TRUE(lintime::testing::shared_data_holds(data, "gpt2-vocab.json"));
  TempDir dir;
  const std::string common = "tokenize --tokenizer " + data + "/gpt2-vocab.json " + data +
                             "/tinyshakespeare.txt --split-blank-lines --val-fraction 0.1 --shard-tokens 65536";
  const CommandResult one = run_lintime(common + " --threads 1 --out " + dir.file("one"));
  ASSERT_EQ(one.exit_code, 0) << one.out;
  const CommandResult two = run_lintime(common + " --threads 3 --out " + dir.file("two"));
  ASSERT_EQ(two.exit_code, 0) << two.out;
  const auto files_one = directory_bytes(dir.file("one")), files_two = directory_bytes(dir.file("two"));
  EXPECT_EQ(files_one.size(), files_two.size());
  for (const auto& [name, bytes] : files_one) EXPECT_TRUE(files_two.count(name) && bytes == files_two.at(name)) << name;

  const auto manifest = lintime::io::read_token_manifest(dir.file("one"));
  EXPECT_EQ(manifest.tokenizer.vocab_size, 50257);
  EXPECT_EQ(manifest.eos_id, 50256);
  EXPECT_EQ(manifest.dtype, lintime::io::TokenDtype::uint16);
  const auto& train = manifest.splits.at("train");
  const auto& val = manifest.splits.at("val");
  // About 7,200 speeches and 330K tokens; a tenth of them in val.
  EXPECT_GT(train.documents + val.documents, 7000);
  EXPECT_GT(train.tokens + val.tokens, 300000);
  EXPECT_GT(val.documents, (train.documents + val.documents) / 20);
  EXPECT_LT(val.documents, (train.documents + val.documents) / 5);
  EXPECT_GT(train.shards.size(), 3u);
  // The training split opens against GPT-2's vocabulary, and the first speech decodes back.
  auto set = lintime::io::TokenShardSet::open(dir.file("one"), "train", {.vocab_size = 50257});
  EXPECT_EQ(set->tokens(), train.tokens);
  auto source = lintime::data::load_tokenizer_source(data + "/gpt2-vocab.json");
  std::vector<int64_t> head(64);
  set->read(0, 64, head.data());
  const auto eos = std::find(head.begin(), head.end(), 50256);
  ASSERT_NE(eos, head.end());
  const auto documents =
      lintime::data::read_text_documents(data + "/tinyshakespeare.txt", {.split_blank_lines = true});
  EXPECT_EQ(documents[0].text, "First Citizen:\nBefore we proceed any further, hear me speak.");
  size_t first_train = 0;
  while (lintime::data::is_validation_document(static_cast<int64_t>(first_train), 0.1)) ++first_train;
  EXPECT_EQ(source.tokenizer->decode(std::vector<int64_t>(head.begin(), eos)), documents.at(first_train).text);
}

}  // namespace
