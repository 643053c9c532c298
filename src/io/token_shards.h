// Token shards: tokenized text as little-endian binary files that are memory-mapped for
// training (a corpus is never read into RAM), plus manifest.json describing a shard directory.
//
// Shard file (<split>-NNNNN.bin), every integer little-endian:
//   offset  bytes  field
//   0       8      magic "LTTOKENS"
//   8       4      format version (1)
//   12      4      token width in bytes: 2 (uint16, vocabularies up to 65536) or 4 (uint32)
//   16      8      token count T
//   24      8      document count D: documents whose first token lies in this shard
//   32      4      max token id in the shard (0 when T = 0)
//   36      4      CRC32 (zlib) of the payload, bytes [48, end)
//   40      4      CRC32 (zlib) of the header bytes [0, 40)
//   44      4      zero
//   48      8·D    document starts: uint64 token index within the shard, strictly ascending, < T
//   48+8D   w·T    tokens
// A document may continue into the next shard (shards hold exactly shard_tokens tokens except the
// last of a split); the logical token stream of a split is its shards in manifest order.
//
// manifest.json (written last, atomically) holds the format version, the tokenizer's identity
// (kind, vocabulary size, FNV-1a 64 hash of its files, the path it came from), the EOS id, the
// token dtype and per split ("train", "val") its shards with their token and document counts,
// the split's totals and its max token id. Every file is written to "<name>.tmp" in the same
// folder and renamed, so a half-written shard or manifest never carries its final name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace lintime::io {

inline constexpr int kTokenShardFormatVersion = 1;
inline constexpr const char* kTokenManifestFile = "manifest.json";

enum class TokenDtype { uint16, uint32 };

// uint16 when every id of a vocabulary of `vocab_size` fits (vocab_size <= 65536), else uint32.
TokenDtype token_dtype_for_vocab(int64_t vocab_size);
int token_dtype_bytes(TokenDtype dtype);
const char* token_dtype_name(TokenDtype dtype);  // "uint16" / "uint32"
TokenDtype parse_token_dtype(const std::string& name);

// FNV-1a 64 over bytes, continuing from `state` (start with kFnv1a64Offset).
inline constexpr uint64_t kFnv1a64Offset = 14695981039346656037ull;
uint64_t fnv1a64(const void* data, size_t size, uint64_t state = kFnv1a64Offset);
// "fnv1a64:<16 hex digits>" over the bytes of the files in order. Throws naming an unreadable file.
std::string hash_files_fnv1a64(const std::vector<std::string>& paths);

// ---------------------------------------------------------------------------------------------
// One shard file

// Writes one shard atomically ("<path>.tmp", fsync, rename). `tokens` must fit `dtype` and
// `document_starts` be strictly ascending and < tokens.size(); throws lintime::Error otherwise.
void write_token_shard(const std::string& path, TokenDtype dtype, std::span<const uint32_t> tokens,
                       std::span<const uint64_t> document_starts);

struct TokenShardOpenOptions {
  bool verify_checksum = true;          // CRC32 of the payload (one pass over the mapped file)
  std::optional<int64_t> vocab_size;    // refuse token ids >= vocab_size
};

// A memory-mapped, validated shard: magic, version, width, header CRC, file size against the
// counts, document starts ascending, the header's max id below vocab_size, and (verify_checksum)
// the payload CRC and the header's max id against the tokens. Every error is one line naming the
// file and what was expected.
class TokenShard {
 public:
  static std::shared_ptr<const TokenShard> open(const std::string& path, const TokenShardOpenOptions& options = {});
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  TokenDtype dtype() const { return dtype_; }
  int64_t tokens() const { return tokens_; }
  int64_t documents() const { return documents_; }
  int64_t max_token_id() const { return max_token_id_; }
  uint32_t payload_crc32() const { return payload_crc32_; }
  int64_t token(int64_t index) const;
  // Copies tokens [begin, begin + count) widened to int64.
  void read(int64_t begin, int64_t count, int64_t* out) const;
  // Document starts (token index within this shard), ascending.
  std::span<const uint64_t> document_starts() const;

 private:
  TokenShard() = default;
  std::string path_;
  void* address_ = nullptr;
  size_t size_ = 0;
  TokenDtype dtype_ = TokenDtype::uint16;
  int64_t tokens_ = 0, documents_ = 0, max_token_id_ = 0;
  uint32_t payload_crc32_ = 0;
  const uint8_t* token_bytes_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Manifest

struct TokenizerIdentity {
  std::string kind;        // "byte-level BPE", "sentencepiece"
  int64_t vocab_size = 0;
  std::string hash;        // hash_files_fnv1a64 of the tokenizer's files
  std::string source;      // the path it was loaded from (messages only)
};

struct TokenShardEntry {
  std::string file;  // relative to the shard directory
  int64_t tokens = 0;
  int64_t documents = 0;
};

struct TokenSplit {
  std::vector<TokenShardEntry> shards;
  int64_t tokens = 0;
  int64_t documents = 0;
  int64_t max_token_id = 0;
};

struct TokenManifest {
  int format_version = kTokenShardFormatVersion;
  TokenizerIdentity tokenizer;
  int64_t eos_id = 0;
  TokenDtype dtype = TokenDtype::uint16;
  std::map<std::string, TokenSplit> splits;  // "train", "val"
};

// Reads and checks <dir>/manifest.json (types, version, totals = sums over shards); one-line errors.
TokenManifest read_token_manifest(const std::string& dir);
// Writes <dir>/manifest.json atomically.
void write_token_manifest(const std::string& dir, const TokenManifest& manifest);

// Appends documents to one split of a shard directory, cutting shards of exactly `shard_tokens`
// tokens (the last one shorter); a shard is assembled in memory (shard_tokens × width bytes) and
// then written atomically.
class TokenShardWriter {
 public:
  TokenShardWriter(std::string dir, std::string split, TokenDtype dtype, int64_t shard_tokens);
  // Appends one document (its tokens, EOS included). Ids must fit the dtype.
  void add_document(std::span<const int64_t> tokens);
  // Writes the last shard and returns the split's entry for the manifest. Call once.
  TokenSplit finish();

 private:
  void flush();
  std::string dir_, split_;
  TokenDtype dtype_;
  int64_t shard_tokens_;
  std::vector<uint8_t> token_bytes_;  // the shard being assembled, in the dtype's width
  int64_t buffered_tokens_ = 0;
  uint32_t buffered_max_id_ = 0;
  std::vector<uint64_t> document_starts_;
  TokenSplit result_;
  bool finished_ = false;
};

// ---------------------------------------------------------------------------------------------
// A split as one token stream

struct TokenShardSetOptions {
  std::optional<int64_t> vocab_size;  // the model's: refuse shards with ids >= vocab_size
  bool verify_checksums = true;       // CRC32 of every shard when opening
};

// All shards of one split of a shard directory as one logical token stream with document
// boundaries. Refuses a missing or empty split, a shard whose header disagrees with the manifest,
// token ids >= vocab_size (the manifest's max id and every shard's), and truncated or corrupt shards.
class TokenShardSet {
 public:
  static std::shared_ptr<const TokenShardSet> open(const std::string& dir, const std::string& split,
                                                   const TokenShardSetOptions& options = {});

  const std::string& dir() const { return dir_; }
  const std::string& split() const { return split_; }
  const TokenManifest& manifest() const { return manifest_; }
  int64_t tokens() const { return tokens_; }
  int64_t documents() const { return documents_; }
  // Copies tokens [begin, begin + count) of the stream widened to int64 (spans shards).
  void read(int64_t begin, int64_t count, int64_t* out) const;
  // Appends to `out` the stream positions in [begin, end) where a document starts, ascending.
  void document_starts(int64_t begin, int64_t end, std::vector<int64_t>& out) const;

 private:
  TokenShardSet() = default;
  std::string dir_, split_;
  TokenManifest manifest_;
  std::vector<std::shared_ptr<const TokenShard>> shards_;
  std::vector<int64_t> shard_begin_;  // stream position of each shard's first token
  int64_t tokens_ = 0, documents_ = 0;
};

}  // namespace lintime::io
