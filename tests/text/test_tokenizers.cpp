// Tokenizers against the reference implementations: ids recorded by Hugging Face `tokenizers`
// (GPT-2 byte-level BPE) and the `sentencepiece` package (Llama 2) in tests/fixtures/tokenizers.json
// (scripts/make_tokenizer_fixtures.py), on edge cases and text excerpts; round trips over the
// shared corpora; the folder-based loader; errors. Tests needing ../shared/data skip without it
// (and fail under CI, where it is always present).
#include "core/error.h"
#include "support/test_support.h"
#include "text/byte_level_bpe.h"
#include "text/sentencepiece_tokenizer.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using lintime::text::ByteLevelBpeTokenizer;
using lintime::text::SentencePieceTokenizer;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

json fixtures() {
  const char* source = std::getenv("LINTIME_SOURCE_DIR");
  const fs::path path = fs::path(source ? source : ".") / "tests" / "fixtures" / "tokenizers.json";
  if (!fs::exists(path)) throw std::runtime_error("fixture " + path.string() + " not found (set LINTIME_SOURCE_DIR)");
  return json::parse(read_text(path));
}

using lintime::testing::error_of;

std::vector<int64_t> ids_of(const json& list) { return list.get<std::vector<int64_t>>(); }

// Empty when `decoded` equals `text`; else where they first differ, with a little context (a
// failing whole-corpus comparison should not print two megabytes).
std::string first_difference(const std::string& decoded, const std::string& text) {
  if (decoded == text) return "";
  size_t at = 0;
  while (at < decoded.size() && at < text.size() && decoded[at] == text[at]) ++at;
  const size_t from = at < 20 ? 0 : at - 20;
  return "first difference at byte " + std::to_string(at) + " of " + std::to_string(text.size()) + ": decoded '" +
         decoded.substr(from, 40) + "', text '" + text.substr(from, 40) + "'";
}

// The excerpt a fixture entry names, cut by code points as Python slices str.
std::string excerpt(const std::string& data, const json& entry) {
  const auto code_points = lintime::text::decode_utf8(read_text(fs::path(data) / entry["file"].get<std::string>()));
  std::string out;
  const size_t start = entry["start"], length = entry["length"];
  for (size_t k = start; k < std::min(code_points.size(), start + length); ++k) lintime::text::append_utf8(out, code_points[k]);
  return out;
}

TEST(Unicode, DecodesValidatesAndClassifies) {
  const auto cps = lintime::text::decode_utf8("a\xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80");  // a é 日 😀
  EXPECT_EQ(cps, (std::vector<char32_t>{U'a', 0xE9, 0x65E5, 0x1F600}));
  std::string round;
  for (char32_t c : cps) lintime::text::append_utf8(round, c);
  EXPECT_EQ(round, "a\xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80");
  EXPECT_EQ(error_of([] { lintime::text::decode_utf8("ok\xC0\xAF"); }), "text is not valid UTF-8: malformed sequence at byte 2");
  EXPECT_NE(error_of([] { lintime::text::decode_utf8("\xED\xA0\x80"); }), "");  // a surrogate
  EXPECT_NE(error_of([] { lintime::text::decode_utf8("\xE6\x97"); }), "");      // cut short
  EXPECT_TRUE(lintime::text::is_letter(U'é'));
  EXPECT_TRUE(lintime::text::is_letter(0x65E5));
  EXPECT_FALSE(lintime::text::is_letter(U'1'));
  EXPECT_TRUE(lintime::text::is_number(0x0663));  // ARABIC-INDIC DIGIT THREE
  EXPECT_TRUE(lintime::text::is_number(0x216B));  // ROMAN NUMERAL TWELVE (Nl)
  EXPECT_TRUE(lintime::text::is_white_space(0x3000));
  EXPECT_FALSE(lintime::text::is_white_space(0x200B));  // zero width space is not White_Space
}

TEST(ByteLevelBpe, PreTokenizerMatchesGpt2Pattern) {
  const json fixture = fixtures();
  for (const auto& [text, pieces] : fixture["gpt2_pre_tokens"].items()) {
    EXPECT_EQ(ByteLevelBpeTokenizer::pre_tokenize(text), pieces.get<std::vector<std::string>>()) << "text: " << text;
  }
}

TEST(ByteLevelBpe, EncodesLikeHuggingFaceTokenizers) {
  LINTIME_REQUIRE_SHARED_DATA(data, "gpt2-merges.txt");
  auto tokenizer = ByteLevelBpeTokenizer::from_vocab_and_merges(data + "/gpt2-vocab.json", data + "/gpt2-merges.txt");
  EXPECT_EQ(tokenizer->vocab_size(), 50257);
  EXPECT_EQ(tokenizer->eos_id(), 50256);
  const json fixture = fixtures();
  for (const json& item : fixture["cases"]) {
    const std::string text = item["text"];
    EXPECT_EQ(tokenizer->encode(text), ids_of(item["gpt2"])) << "text: " << text;
    EXPECT_EQ(tokenizer->decode(ids_of(item["gpt2"])), text);
  }
  for (const json& item : fixture["excerpts"]) {
    EXPECT_EQ(tokenizer->encode(excerpt(data, item)), ids_of(item["gpt2"])) << item["file"];
  }
}

TEST(ByteLevelBpe, RoundTripsTheCorpora) {
  LINTIME_REQUIRE_SHARED_DATA(data, "gpt2-merges.txt");
  auto tokenizer = ByteLevelBpeTokenizer::from_vocab_and_merges(data + "/gpt2-vocab.json", data + "/gpt2-merges.txt");
  for (const char* name : {"tinyshakespeare.txt", "wikitext2-valid.txt"}) {
    const std::string text = read_text(fs::path(data) / name);
    const auto ids = tokenizer->encode(text);
    EXPECT_LT(ids.size(), text.size() / 2) << name;  // BPE compresses English text (≈ 4 bytes per token)
    EXPECT_EQ(first_difference(tokenizer->decode(ids), text), "") << name;
  }
}

TEST(ByteLevelBpe, TokenizerJsonEqualsVocabAndMerges) {
  LINTIME_REQUIRE_SHARED_DATA(data, "gpt2-merges.txt");
  // A tokenizer.json in Hugging Face's layout built from the same vocabulary and merges.
  json vocab = json::parse(read_text(fs::path(data) / "gpt2-vocab.json"));
  json merges = json::array();
  std::istringstream lines(read_text(fs::path(data) / "gpt2-merges.txt"));
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.rfind("#version", 0) != 0) merges.push_back(line);
  }
  json document = {{"version", "1.0"},
                   {"added_tokens", {{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}}},
                   {"normalizer", nullptr},
                   {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
                   {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  const fs::path dir = fs::temp_directory_path() / ("lintime_tokenizer_json_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << document.dump();
  auto from_json = lintime::text::load_tokenizer(dir.string());
  auto from_files = ByteLevelBpeTokenizer::from_vocab_and_merges(data + "/gpt2-vocab.json", data + "/gpt2-merges.txt");
  EXPECT_EQ(from_json->kind(), "byte-level BPE");
  const json cases = fixtures()["cases"];  // a copy: looping over a member of the temporary would dangle
  for (const json& item : cases) {
    EXPECT_EQ(from_json->encode(item["text"].get<std::string>()), ids_of(item["gpt2"])) << item["text"];
  }
  // add_prefix_space: " Hello" and "Hello" then encode alike.
  document["pre_tokenizer"]["add_prefix_space"] = true;
  std::ofstream(dir / "tokenizer.json") << document.dump();
  auto prefixed = lintime::text::load_tokenizer(dir.string());
  EXPECT_EQ(prefixed->encode("Hello"), from_files->encode(" Hello"));
  // Unsupported tokenizer.json kinds are named.
  document["model"]["type"] = "WordPiece";
  std::ofstream(dir / "tokenizer.json") << document.dump();
  EXPECT_NE(error_of([&] { lintime::text::load_tokenizer(dir.string()); }).find("model.type is \"WordPiece\""),
            std::string::npos);
  fs::remove_all(dir);
}

// The ids come from the `sentencepiece` Python package, which wraps the same C++ library that
// lintime links (Debian's libsentencepiece): this checks lintime's use of that library (model
// loading, BOS/EOS, byte fallback, decoding), not an independent implementation.
TEST(SentencePiece, EncodesLikeTheSentencePiecePackage) {
  LINTIME_REQUIRE_SHARED_DATA(data, "llama2-tokenizer.model");
  SentencePieceTokenizer tokenizer(data + "/llama2-tokenizer.model");
  EXPECT_EQ(tokenizer.vocab_size(), 32000);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  const json fixture = fixtures();
  for (const json& item : fixture["cases"]) {
    EXPECT_EQ(tokenizer.encode(item["text"].get<std::string>()), ids_of(item["llama2"])) << item["text"];
  }
  for (const json& item : fixture["excerpts"]) {
    EXPECT_EQ(tokenizer.encode(excerpt(data, item)), ids_of(item["llama2"])) << item["file"];
  }
}

// Encode + decode restores each whole corpus (SentencePiece adds a dummy prefix space when
// encoding and removes it when decoding, so the text comes back byte for byte).
TEST(SentencePiece, RoundTripsTheCorpora) {
  LINTIME_REQUIRE_SHARED_DATA(data, "llama2-tokenizer.model");
  SentencePieceTokenizer tokenizer(data + "/llama2-tokenizer.model");
  for (const char* name : {"tinyshakespeare.txt", "wikitext2-valid.txt"}) {
    const std::string text = read_text(fs::path(data) / name);
    const auto ids = tokenizer.encode(text);
    EXPECT_LT(ids.size(), text.size() / 2) << name;
    EXPECT_EQ(first_difference(tokenizer.decode(ids), text), "") << name;
  }
}

TEST(Tokenizers, LoaderAndErrorsNameWhatIsWrong) {
  const fs::path dir = fs::temp_directory_path() / ("lintime_tokenizer_errors_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  EXPECT_NE(error_of([&] { lintime::text::load_tokenizer(dir.string()); }).find("holds no tokenizer: expected tokenizer.model"),
            std::string::npos);
  EXPECT_NE(error_of([&] { lintime::text::load_tokenizer((dir / "missing").string()); }).find("does not exist"),
            std::string::npos);
  std::ofstream(dir / "tokenizer.model") << "not a model";
  EXPECT_NE(error_of([&] { lintime::text::load_tokenizer(dir.string()); }).find("is not a SentencePiece model"),
            std::string::npos);
  fs::remove(dir / "tokenizer.model");
  std::ofstream(dir / "vocab.json") << R"({"a": 0, "b": 1})";
  std::ofstream(dir / "merges.txt") << "#version: 0.2\na b\n";
  EXPECT_NE(error_of([&] { lintime::text::load_tokenizer(dir.string()); }).find("lacks the symbol of byte 0"),
            std::string::npos);
  std::ofstream(dir / "merges.txt") << "#version: 0.2\nab\n";
  EXPECT_NE(error_of([&] { lintime::text::load_tokenizer(dir.string()); }).find("line 2: expected two symbols"),
            std::string::npos);
  // A binary merges file: its bytes are shown escaped and cut short, never printed raw.
  std::ofstream(dir / "merges.txt") << "#version: 0.2\n\x01\xff\x80" << std::string(100, 'z') << "\n";
  const std::string binary = error_of([&] { lintime::text::load_tokenizer(dir.string()); });
  EXPECT_NE(binary.find("line 2: expected two symbols separated by one space, got \"\\x01\\xff\\x80zzz"),
            std::string::npos) << binary;
  EXPECT_NE(binary.find("zzz...\""), std::string::npos) << binary;
  EXPECT_EQ(binary.find('\xff'), std::string::npos) << binary;
  std::ofstream(dir / "vocab.json") << "{broken";
  EXPECT_NE(error_of([&] { lintime::text::load_tokenizer(dir.string()); }).find("is not valid JSON"), std::string::npos);
  fs::remove_all(dir);
  LINTIME_REQUIRE_SHARED_DATA(data, "gpt2-merges.txt");
  auto tokenizer = ByteLevelBpeTokenizer::from_vocab_and_merges(data + "/gpt2-vocab.json", data + "/gpt2-merges.txt");
  EXPECT_EQ(error_of([&] { tokenizer->decode({15496, 50257}); }),
            "byte-level BPE: token id 50257 is not in the vocabulary (size 50257)");
  EXPECT_EQ(error_of([&] { tokenizer->encode("bad \xFF byte"); }), "text is not valid UTF-8: malformed sequence at byte 4");
}

}  // namespace
