// Token shards: uint16 and uint32 round trips through the writer, the memory-mapped reader and
// the split stream (documents cut across shards included); truncated, corrupt and mismatched
// files and out-of-range ids are refused with one line naming the file and what was expected.
#include "core/error.h"
#include "io/token_shards.h"
#include "support/test_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <numeric>
#include <sstream>
#include <unistd.h>

namespace {

using lintime::io::TokenDtype;
using lintime::io::TokenManifest;
using lintime::io::TokenShard;
using lintime::io::TokenShardSet;
using lintime::io::TokenShardWriter;
using lintime::testing::error_of;
using lintime::testing::TempDir;

void expect_contains(const std::string& text, const std::string& fragment) {
  EXPECT_NE(text.find(fragment), std::string::npos) << "expected '" << fragment << "' in: " << text;
}

// Documents of lengths 5, 1, 12, 3, 9 with ids from `base` upwards (a distinct id per position).
std::vector<std::vector<int64_t>> make_documents(int64_t base) {
  std::vector<std::vector<int64_t>> documents;
  int64_t next = base;
  for (int64_t length : {5, 1, 12, 3, 9}) {
    std::vector<int64_t> document(length);
    for (auto& id : document) id = next++;
    documents.push_back(document);
  }
  return documents;
}

TokenManifest write_split(const std::string& dir, const std::vector<std::vector<int64_t>>& documents, TokenDtype dtype,
                          int64_t shard_tokens, int64_t vocab_size) {
  TokenShardWriter writer(dir, "train", dtype, shard_tokens);
  for (const auto& document : documents) writer.add_document(document);
  TokenManifest manifest;
  manifest.tokenizer = {"byte-level BPE", vocab_size, "fnv1a64:0000000000000000", "test"};
  manifest.eos_id = 0;
  manifest.dtype = dtype;
  manifest.splits["train"] = writer.finish();
  lintime::io::write_token_manifest(dir, manifest);
  return manifest;
}

void expect_round_trip(TokenDtype dtype, int64_t base, int64_t vocab_size) {
  for (int64_t shard_tokens : {int64_t{1}, int64_t{4}, int64_t{7}, int64_t{30}, int64_t{1000}}) {
    SCOPED_TRACE("shard_tokens " + std::to_string(shard_tokens));
    TempDir dir;
    const auto documents = make_documents(base);
    const TokenManifest written = write_split(dir.path(), documents, dtype, shard_tokens, vocab_size);
    std::vector<int64_t> stream, starts;
    for (const auto& document : documents) {
      starts.push_back(static_cast<int64_t>(stream.size()));
      stream.insert(stream.end(), document.begin(), document.end());
    }
    const int64_t total = static_cast<int64_t>(stream.size());
    EXPECT_EQ(written.splits.at("train").shards.size(), static_cast<size_t>((total + shard_tokens - 1) / shard_tokens));

    auto set = TokenShardSet::open(dir.path(), "train", {.vocab_size = vocab_size});
    EXPECT_EQ(set->tokens(), total);
    EXPECT_EQ(set->documents(), static_cast<int64_t>(documents.size()));
    EXPECT_EQ(set->manifest().dtype, dtype);
    EXPECT_EQ(set->manifest().splits.at("train").max_token_id, stream.back());
    std::vector<int64_t> read(total);
    set->read(0, total, read.data());
    EXPECT_EQ(read, stream);
    // Every sub-range, across shard boundaries.
    for (int64_t begin = 0; begin < total; begin += 3) {
      for (int64_t end = begin; end <= total; end += 5) {
        std::vector<int64_t> part(end - begin);
        set->read(begin, end - begin, part.data());
        EXPECT_EQ(part, std::vector<int64_t>(stream.begin() + begin, stream.begin() + end));
        std::vector<int64_t> found, expected;
        set->document_starts(begin, end, found);
        for (int64_t s : starts)
          if (s >= begin && s < end) expected.push_back(s);
        EXPECT_EQ(found, expected) << "[" << begin << ", " << end << ")";
      }
    }
  }
}

TEST(TokenShards, DtypeFollowsTheVocabularySize) {
  EXPECT_EQ(lintime::io::token_dtype_for_vocab(50257), TokenDtype::uint16);
  EXPECT_EQ(lintime::io::token_dtype_for_vocab(65536), TokenDtype::uint16);
  EXPECT_EQ(lintime::io::token_dtype_for_vocab(65537), TokenDtype::uint32);
  EXPECT_EQ(lintime::io::token_dtype_bytes(TokenDtype::uint32), 4);
}

TEST(TokenShards, Fnv1a64MatchesTheReferenceValues) {
  EXPECT_EQ(lintime::io::fnv1a64("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(lintime::io::fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(lintime::io::fnv1a64("foobar", 6), 0x85944171f73967e8ull);
  TempDir dir;
  std::ofstream(dir.file("a.txt"), std::ios::binary) << "foo";
  std::ofstream(dir.file("b.txt"), std::ios::binary) << "bar";
  EXPECT_EQ(lintime::io::hash_files_fnv1a64({dir.file("a.txt"), dir.file("b.txt")}), "fnv1a64:85944171f73967e8");
  expect_contains(error_of([&] { lintime::io::hash_files_fnv1a64({dir.file("none.txt")}); }), "none.txt");
}

TEST(TokenShards, RoundTripUint16) { expect_round_trip(TokenDtype::uint16, 65500, 65536); }

TEST(TokenShards, RoundTripUint32) { expect_round_trip(TokenDtype::uint32, 70000, 70100); }

TEST(TokenShards, SingleShardFileRoundTrip) {
  TempDir dir;
  const std::vector<uint32_t> tokens = {7, 0, 4000000000u, 3};
  const std::vector<uint64_t> starts = {0, 2};
  lintime::io::write_token_shard(dir.file("one.bin"), TokenDtype::uint32, tokens, starts);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"one.bin"});  // no temporary left behind
  auto shard = TokenShard::open(dir.file("one.bin"));
  EXPECT_EQ(shard->tokens(), 4);
  EXPECT_EQ(shard->documents(), 2);
  EXPECT_EQ(shard->max_token_id(), 4000000000ll);
  EXPECT_EQ(shard->token(2), 4000000000ll);
  EXPECT_EQ(std::vector<uint64_t>(shard->document_starts().begin(), shard->document_starts().end()), starts);
  // 48-byte header + 2 starts + 4 uint32 tokens.
  std::ifstream in(dir.file("one.bin"), std::ios::binary | std::ios::ate);
  EXPECT_EQ(static_cast<int64_t>(in.tellg()), 48 + 16 + 16);
}

TEST(TokenShards, WriterRefusesIdsThatDoNotFit) {
  TempDir dir;
  TokenShardWriter writer(dir.path(), "train", TokenDtype::uint16, 100);
  const std::vector<int64_t> document = {1, 65536};
  expect_contains(error_of([&] { writer.add_document(document); }), "token id 65536 does not fit uint16");
  const std::vector<uint32_t> tokens = {1, 2};
  const std::vector<uint64_t> starts = {1, 1};
  expect_contains(error_of([&] { lintime::io::write_token_shard(dir.file("x.bin"), TokenDtype::uint16, tokens, starts); }),
                  "not strictly ascending");
}

class TokenShardErrors : public ::testing::Test {
 protected:
  void SetUp() override { manifest_ = write_split(dir_.path(), make_documents(100), TokenDtype::uint16, 16, 1000); }
  std::string shard(int index) const { return dir_.file(manifest_.splits.at("train").shards.at(index).file); }
  std::string open_error(std::optional<int64_t> vocab_size = std::nullopt) const {
    return error_of([&] { TokenShardSet::open(dir_.path(), "train", {.vocab_size = vocab_size}); });
  }
  nlohmann::json manifest_json() const {
    std::ifstream in(dir_.file("manifest.json"));
    return nlohmann::json::parse(in);
  }
  void write_manifest_json(const nlohmann::json& document) const {
    std::ofstream(dir_.file("manifest.json")) << document.dump(2);
  }
  void flip_byte(const std::string& path, long offset) const {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(offset);
    char byte = 0;
    file.read(&byte, 1);
    byte ^= 0x10;
    file.seekp(offset);
    file.write(&byte, 1);
  }

  TempDir dir_;
  TokenManifest manifest_;
};

TEST_F(TokenShardErrors, TruncatedShardNamesTheFileAndTheExpectedSize) {
  ASSERT_EQ(::truncate(shard(1).c_str(), 48 + 16 + 10), 0);  // header, two starts, 5 of 14 tokens
  const std::string error = open_error();
  expect_contains(error, shard(1));
  expect_contains(error, "is truncated: 74 bytes, expected 92 ");
  expect_contains(error, "for 14 uint16 tokens");
  ASSERT_EQ(::truncate(shard(0).c_str(), 20), 0);
  expect_contains(open_error(), shard(0) + "' is truncated: 20 bytes, expected at least the 48-byte header");
}

TEST_F(TokenShardErrors, CorruptPayloadFailsTheChecksum) {
  flip_byte(shard(0), 48 + 8 * 3 + 6);  // a token of shard 0 (three documents start there)
  const std::string error = open_error();
  expect_contains(error, shard(0));
  expect_contains(error, "is corrupt: payload CRC32 0x");
  expect_contains(error, "expected 0x");
  // Without checksums the shard opens (the header is intact).
  EXPECT_EQ(error_of([&] { TokenShardSet::open(dir_.path(), "train", {.verify_checksums = false}); }), "");
}

TEST_F(TokenShardErrors, CorruptHeaderAndForeignFiles) {
  flip_byte(shard(0), 17);  // token count
  expect_contains(open_error(), shard(0) + "' is corrupt: header CRC32");
  std::ofstream(shard(1), std::ios::binary) << std::string(64, 'x');
  expect_contains(error_of([&] { TokenShard::open(shard(1)); }), shard(1) + "' is not a token shard: expected the magic");
}

TEST_F(TokenShardErrors, OutOfRangeIdsAreRefused) {
  // The split's largest id is 129 (100 + 30 tokens - 1).
  EXPECT_EQ(open_error(130), "");
  const std::string error = open_error(129);
  expect_contains(error, "hold token ids up to 129, outside the model's vocabulary of 129");
  // A manifest that understates the largest id is caught by the shards' own headers.
  auto document = manifest_json();
  document["splits"]["train"]["max_token_id"] = 120;
  write_manifest_json(document);
  expect_contains(open_error(129), shard(1) + "' holds token id 129, expected ids below the vocabulary size 129");
  expect_contains(open_error(), shard(1) + "' holds token id 129, above the split's max_token_id 120");
}

TEST_F(TokenShardErrors, ManifestAndShardMustAgree) {
  auto document = manifest_json();
  document["splits"]["train"]["shards"][0]["tokens"] = 15;
  document["splits"]["train"]["tokens"] = 29;
  write_manifest_json(document);
  const std::string error = open_error();
  expect_contains(error, shard(0) + "' holds 16 tokens and 3 document starts, but manifest.json lists 15 and 3");
  document["splits"]["train"]["tokens"] = 31;
  write_manifest_json(document);
  expect_contains(open_error(), "split 'train' counts 31 tokens and 5 documents, but its shards add up to 29 and 5");
}

// Counts that are floats, negative or past 2^62 are refused by name (libFuzzer: a split of 5.6e47
// tokens was converted to an integer with undefined behaviour).
TEST_F(TokenShardErrors, ManifestCountsMustBeIntegersInRange) {
  const std::string where = "token manifest '" + dir_.file("manifest.json") + "': ";
  for (const auto& [value, shown] : std::vector<std::pair<nlohmann::json, std::string>>{
           {nlohmann::json::parse("5.6e47"), "5.6e+47"}, {-1, "-1"}, {30.5, "30.5"}, {(int64_t{1} << 62) + 1, "4611686018427387905"}}) {
    auto document = manifest_json();
    document["splits"]["train"]["tokens"] = value;
    write_manifest_json(document);
    EXPECT_EQ(open_error(), where + "\"tokens\" must be an integer in [0, 2^62], got " + shown);
  }
  auto document = manifest_json();
  document["splits"]["train"]["tokens"] = manifest_.splits.at("train").tokens;
  document["splits"]["train"]["shards"][0]["tokens"] = int64_t{1} << 62;
  document["splits"]["train"]["shards"][1]["tokens"] = int64_t{1} << 62;
  document["splits"]["train"]["shards"].push_back(document["splits"]["train"]["shards"][0]);
  write_manifest_json(document);
  EXPECT_EQ(open_error(), where + "split 'train' counts more tokens or documents than 64 bits hold");
}

TEST_F(TokenShardErrors, MissingOrEmptySplitsAndManifests) {
  expect_contains(error_of([&] { TokenShardSet::open(dir_.path(), "val"); }),
                  "have no split 'val' (the manifest lists: train)");
  auto document = manifest_json();
  document["splits"]["val"] = {{"shards", nlohmann::json::array()}, {"tokens", 0}, {"documents", 0}, {"max_token_id", 0}};
  write_manifest_json(document);
  expect_contains(error_of([&] { TokenShardSet::open(dir_.path(), "val"); }), "split 'val' of token shards");
  expect_contains(error_of([&] { TokenShardSet::open(dir_.path(), "val"); }), "is empty");
  ::unlink(shard(1).c_str());
  expect_contains(open_error(), shard(1) + "': cannot open");
  TempDir empty;
  expect_contains(error_of([&] { TokenShardSet::open(empty.path(), "train"); }),
                  "no token manifest in '" + empty.path() + "'");
  std::ofstream(empty.file("manifest.json")) << "{\"format_version\": 1}";
  expect_contains(error_of([&] { TokenShardSet::open(empty.path(), "train"); }), "manifest.json");
}

}  // namespace
