// Token shard files (atomic writer, memory-mapped validated reader), manifest.json and the split
// as one token stream. See token_shards.h for the format. File-system work uses POSIX calls:
// libtorch.so exports its own copies of the std::filesystem free functions (train/checkpoint.cpp).
#include "io/token_shards.h"

#include "core/error.h"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian; big-endian hosts would need byte swapping");

namespace lintime::io {

namespace {

constexpr char kMagic[8] = {'L', 'T', 'T', 'O', 'K', 'E', 'N', 'S'};
constexpr size_t kHeaderBytes = 48;
constexpr size_t kHeaderCrcCovers = 40;  // the header CRC covers bytes [0, 40)
constexpr size_t kCrcChunkBytes = size_t{1} << 20;  // chunks stay in cache for the max-id pass

std::string where(const std::string& path) { return "token shard '" + path + "'"; }
std::string manifest_path(const std::string& dir) { return dir + "/" + kTokenManifestFile; }

template <typename T>
T load(const uint8_t* bytes) {
  T value;
  std::memcpy(&value, bytes, sizeof(T));
  return value;
}

template <typename T>
void store(uint8_t* bytes, T value) {
  std::memcpy(bytes, &value, sizeof(T));
}

uint32_t crc32_of(const uint8_t* data, size_t size, uint32_t crc = 0) {
  uLong value = crc;
  for (size_t done = 0; done < size;) {
    const size_t n = std::min(size - done, kCrcChunkBytes);
    value = ::crc32(value, data + done, static_cast<uInt>(n));
    done += n;
  }
  return static_cast<uint32_t>(value);
}

template <typename Token>
uint32_t max_of(const uint8_t* bytes, size_t count) {
  const Token* tokens = reinterpret_cast<const Token*>(bytes);
  Token best = 0;
  for (size_t i = 0; i < count; ++i) best = std::max(best, tokens[i]);
  return best;
}

bool write_all(int fd, const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, bytes, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Writes the pieces to "<path>.tmp", fsyncs and renames it to `path`.
void write_file_atomically(const std::string& path, const std::string& what,
                           const std::vector<std::pair<const void*, size_t>>& pieces) {
  const std::string temporary = path + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LINTIME_CHECK(fd >= 0, what, ": cannot create '", temporary, "': ", std::strerror(errno));
  auto abandon = [&](const char* action) {
    const int saved = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(temporary.c_str());
    fail(what, ": ", action, " of '", temporary, "' failed: ", std::strerror(saved));
  };
  for (const auto& [data, size] : pieces)
    if (!write_all(fd, data, size)) abandon("write");
  if (::fsync(fd) != 0) abandon("fsync");
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) abandon("close");
  if (::rename(temporary.c_str(), path.c_str()) != 0) abandon("rename");
}

void make_directories(const std::string& dir) {
  std::string partial;
  size_t position = 0;
  while (position != std::string::npos) {
    position = dir.find('/', position + 1);
    partial = dir.substr(0, position);
    if (partial.empty()) continue;
    struct stat info {};
    if (::stat(partial.c_str(), &info) == 0) {
      LINTIME_CHECK(S_ISDIR(info.st_mode), "token shards: '", partial, "' exists and is not a directory");
      continue;
    }
    LINTIME_CHECK(::mkdir(partial.c_str(), 0755) == 0 || errno == EEXIST, "token shards: cannot create directory '",
                  partial, "': ", std::strerror(errno));
  }
}

std::string hex32(uint32_t value) {
  char buffer[16];
  std::snprintf(buffer, sizeof(buffer), "0x%08" PRIx32, value);
  return buffer;
}

}  // namespace

TokenDtype token_dtype_for_vocab(int64_t vocab_size) {
  LINTIME_CHECK(vocab_size > 0 && vocab_size <= (int64_t{1} << 32), "token shards: vocabulary size ", vocab_size,
                " is outside [1, 2^32]");
  return vocab_size <= 65536 ? TokenDtype::uint16 : TokenDtype::uint32;
}

int token_dtype_bytes(TokenDtype dtype) { return dtype == TokenDtype::uint16 ? 2 : 4; }

const char* token_dtype_name(TokenDtype dtype) { return dtype == TokenDtype::uint16 ? "uint16" : "uint32"; }

TokenDtype parse_token_dtype(const std::string& name) {
  if (name == "uint16") return TokenDtype::uint16;
  if (name == "uint32") return TokenDtype::uint32;
  fail("token shards: unknown token dtype '", name, "' (expected uint16 or uint32)");
}

uint64_t fnv1a64(const void* data, size_t size, uint64_t state) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < size; ++i) {
    state ^= bytes[i];
    state *= 1099511628211ull;
  }
  return state;
}

std::string hash_files_fnv1a64(const std::vector<std::string>& paths) {
  uint64_t state = kFnv1a64Offset;
  std::vector<char> buffer(size_t{1} << 16);
  for (const auto& path : paths) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    LINTIME_CHECK(file, "cannot read '", path, "' to hash it: ", std::strerror(errno));
    while (size_t n = std::fread(buffer.data(), 1, buffer.size(), file)) state = fnv1a64(buffer.data(), n, state);
    const bool failed = std::ferror(file);
    std::fclose(file);
    LINTIME_CHECK(!failed, "reading '", path, "' to hash it failed");
  }
  char text[32];
  std::snprintf(text, sizeof(text), "fnv1a64:%016" PRIx64, state);
  return text;
}

// ---------------------------------------------------------------------------------------------
// One shard file

namespace {

// Writes a shard whose tokens are already in the dtype's width; the caller checked the ids and starts.
void write_shard_file(const std::string& path, TokenDtype dtype, const void* token_data, size_t count,
                      uint32_t max_id, std::span<const uint64_t> document_starts) {
  const size_t token_bytes = count * token_dtype_bytes(dtype);
  const auto* starts = reinterpret_cast<const uint8_t*>(document_starts.data());
  const size_t starts_bytes = document_starts.size() * sizeof(uint64_t);
  uint32_t payload_crc = crc32_of(starts, starts_bytes);
  payload_crc = crc32_of(static_cast<const uint8_t*>(token_data), token_bytes, payload_crc);

  uint8_t header[kHeaderBytes] = {};
  std::memcpy(header, kMagic, sizeof(kMagic));
  store<uint32_t>(header + 8, kTokenShardFormatVersion);
  store<uint32_t>(header + 12, static_cast<uint32_t>(token_dtype_bytes(dtype)));
  store<uint64_t>(header + 16, count);
  store<uint64_t>(header + 24, document_starts.size());
  store<uint32_t>(header + 32, max_id);
  store<uint32_t>(header + 36, payload_crc);
  store<uint32_t>(header + 40, crc32_of(header, kHeaderCrcCovers));
  write_file_atomically(path, where(path), {{header, kHeaderBytes}, {starts, starts_bytes}, {token_data, token_bytes}});
}

}  // namespace

void write_token_shard(const std::string& path, TokenDtype dtype, std::span<const uint32_t> tokens,
                       std::span<const uint64_t> document_starts) {
  const uint64_t limit = dtype == TokenDtype::uint16 ? 0xFFFFull : 0xFFFFFFFFull;
  uint32_t max_id = 0;
  for (uint32_t token : tokens) max_id = std::max(max_id, token);
  LINTIME_CHECK(max_id <= limit, where(path), ": token id ", max_id, " does not fit ", token_dtype_name(dtype));
  for (size_t i = 0; i < document_starts.size(); ++i) {
    LINTIME_CHECK(document_starts[i] < tokens.size() && (i == 0 || document_starts[i] > document_starts[i - 1]),
                  where(path), ": document start ", document_starts[i], " (number ", i,
                  ") is not strictly ascending below the token count ", tokens.size());
  }
  if (dtype == TokenDtype::uint32) {
    write_shard_file(path, dtype, tokens.data(), tokens.size(), max_id, document_starts);
  } else {
    const std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    write_shard_file(path, dtype, narrow.data(), narrow.size(), max_id, document_starts);
  }
}

TokenShard::~TokenShard() {
  if (address_) ::munmap(address_, size_);
}

std::shared_ptr<const TokenShard> TokenShard::open(const std::string& path, const TokenShardOpenOptions& options) {
  std::shared_ptr<TokenShard> shard(new TokenShard());
  shard->path_ = path;
  const std::string what = where(path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LINTIME_CHECK(fd >= 0, what, ": cannot open: ", std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int saved = errno;
    ::close(fd);
    fail(what, ": cannot stat: ", std::strerror(saved));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    fail(what, ": is a directory or another kind of file, expected a regular file");
  }
  const size_t size = static_cast<size_t>(info.st_size);
  if (size < kHeaderBytes) {
    ::close(fd);
    fail(what, " is truncated: ", size, " bytes, expected at least the ", kHeaderBytes, "-byte header");
  }
  void* address = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int saved = errno;
  ::close(fd);
  LINTIME_CHECK(address != MAP_FAILED, what, ": mmap failed: ", std::strerror(saved));
  shard->address_ = address;
  shard->size_ = size;
  const auto* bytes = static_cast<const uint8_t*>(address);

  LINTIME_CHECK(std::memcmp(bytes, kMagic, sizeof(kMagic)) == 0, what,
                " is not a token shard: expected the magic \"LTTOKENS\" at its start");
  const uint32_t version = load<uint32_t>(bytes + 8);
  LINTIME_CHECK(version == kTokenShardFormatVersion, what, ": format version ", version, ", expected ",
                kTokenShardFormatVersion);
  const uint32_t header_crc = crc32_of(bytes, kHeaderCrcCovers);
  LINTIME_CHECK(header_crc == load<uint32_t>(bytes + 40), what, " is corrupt: header CRC32 ", hex32(header_crc),
                ", expected ", hex32(load<uint32_t>(bytes + 40)), " as stored");
  const uint32_t width = load<uint32_t>(bytes + 12);
  LINTIME_CHECK(width == 2 || width == 4, what, ": token width ", width, " bytes, expected 2 (uint16) or 4 (uint32)");
  shard->dtype_ = width == 2 ? TokenDtype::uint16 : TokenDtype::uint32;
  const uint64_t tokens = load<uint64_t>(bytes + 16);
  const uint64_t documents = load<uint64_t>(bytes + 24);
  LINTIME_CHECK(tokens < (uint64_t{1} << 40) && documents <= tokens, what, ": implausible counts (", tokens,
                " tokens, ", documents, " documents)");
  const uint64_t expected_size = kHeaderBytes + documents * 8 + tokens * width;
  LINTIME_CHECK(size >= expected_size, what, " is truncated: ", size, " bytes, expected ", expected_size, " for ",
                tokens, " ", token_dtype_name(shard->dtype_), " tokens and ", documents, " document starts");
  LINTIME_CHECK(size == expected_size, what, " has ", size - expected_size, " bytes beyond the expected ",
                expected_size, " for ", tokens, " tokens and ", documents, " document starts");
  shard->tokens_ = static_cast<int64_t>(tokens);
  shard->documents_ = static_cast<int64_t>(documents);
  shard->max_token_id_ = load<uint32_t>(bytes + 32);
  shard->payload_crc32_ = load<uint32_t>(bytes + 36);
  shard->token_bytes_ = bytes + kHeaderBytes + documents * 8;
  if (options.vocab_size) {
    LINTIME_CHECK(shard->max_token_id_ < *options.vocab_size, what, " holds token id ", shard->max_token_id_,
                  ", expected ids below the vocabulary size ", *options.vocab_size);
  }

  const auto starts = shard->document_starts();
  for (size_t i = 0; i < starts.size(); ++i) {
    LINTIME_CHECK(starts[i] < tokens && (i == 0 || starts[i] > starts[i - 1]), what, " is corrupt: document start ",
                  starts[i], " (number ", i, ") is not strictly ascending below the token count ", tokens);
  }
  if (options.verify_checksum) {
    uint32_t crc = crc32_of(bytes + kHeaderBytes, documents * 8);
    uint32_t max_id = 0;
    const size_t token_bytes = tokens * width;
    for (size_t done = 0; done < token_bytes;) {
      const size_t n = std::min(token_bytes - done, kCrcChunkBytes);
      crc = crc32_of(shard->token_bytes_ + done, n, crc);
      max_id = std::max(max_id, width == 2 ? max_of<uint16_t>(shard->token_bytes_ + done, n / 2)
                                           : max_of<uint32_t>(shard->token_bytes_ + done, n / 4));
      done += n;
    }
    LINTIME_CHECK(crc == shard->payload_crc32_, what, " is corrupt: payload CRC32 ", hex32(crc), ", expected ",
                  hex32(shard->payload_crc32_), " as stored in its header");
    LINTIME_CHECK(max_id == shard->max_token_id_, what, " is corrupt: its largest token id is ", max_id,
                  ", expected ", shard->max_token_id_, " as stored in its header");
  }
  return shard;
}

int64_t TokenShard::token(int64_t index) const {
  LINTIME_CHECK(index >= 0 && index < tokens_, where(path_), ": token index ", index, " outside [0, ", tokens_, ")");
  return dtype_ == TokenDtype::uint16 ? load<uint16_t>(token_bytes_ + index * 2)
                                      : load<uint32_t>(token_bytes_ + index * 4);
}

void TokenShard::read(int64_t begin, int64_t count, int64_t* out) const {
  LINTIME_CHECK(begin >= 0 && count >= 0 && begin + count <= tokens_, where(path_), ": tokens [", begin, ", ",
                begin + count, ") outside [0, ", tokens_, ")");
  if (dtype_ == TokenDtype::uint16) {
    const auto* tokens = reinterpret_cast<const uint16_t*>(token_bytes_) + begin;
    for (int64_t i = 0; i < count; ++i) out[i] = tokens[i];
  } else {
    const auto* tokens = reinterpret_cast<const uint32_t*>(token_bytes_) + begin;
    for (int64_t i = 0; i < count; ++i) out[i] = tokens[i];
  }
}

std::span<const uint64_t> TokenShard::document_starts() const {
  const auto* starts = reinterpret_cast<const uint64_t*>(static_cast<const uint8_t*>(address_) + kHeaderBytes);
  return {starts, static_cast<size_t>(documents_)};
}

// ---------------------------------------------------------------------------------------------
// Manifest

TokenManifest read_token_manifest(const std::string& dir) {
  using json = nlohmann::json;
  const std::string path = manifest_path(dir);
  std::ifstream in(path, std::ios::binary);
  LINTIME_CHECK(in, "no token manifest in '", dir, "': expected ", path, " (written by `lintime tokenize`)");
  const std::string what = "token manifest '" + path + "'";
  json document;
  try {
    document = json::parse(in);
  } catch (const json::exception& error) {
    fail(what, " is not valid JSON: ", error.what());
  }
  // Counts, ids and the version are integers in [0, 2^62]: nlohmann's get<int64_t> would truncate a
  // float silently and leave one out of range undefined (libFuzzer found 5.6e47 tokens); the
  // bound keeps the sums over shards from overflowing.
  const auto count_at = [&](const json& object, const char* key) -> int64_t {
    const json& value = object.at(key);
    LINTIME_CHECK(value.is_number_unsigned() && value.get<uint64_t>() <= (uint64_t{1} << 62), what, ": \"", key,
                  "\" must be an integer in [0, 2^62], got ", value.dump().substr(0, 40));
    return value.get<int64_t>();
  };
  TokenManifest manifest;
  try {
    LINTIME_CHECK(document.is_object(), what, ": expected a JSON object");
    manifest.format_version = static_cast<int>(std::min<int64_t>(count_at(document, "format_version"), INT32_MAX));
    LINTIME_CHECK(manifest.format_version == kTokenShardFormatVersion, what, ": format_version ",
                  manifest.format_version, ", expected ", kTokenShardFormatVersion);
    const json& tokenizer = document.at("tokenizer");
    manifest.tokenizer.kind = tokenizer.at("kind").get<std::string>();
    manifest.tokenizer.vocab_size = count_at(tokenizer, "vocab_size");
    manifest.tokenizer.hash = tokenizer.at("hash").get<std::string>();
    manifest.tokenizer.source = tokenizer.value("source", std::string());
    manifest.eos_id = count_at(document, "eos_id");
    manifest.dtype = parse_token_dtype(document.at("token_dtype").get<std::string>());
    for (const auto& [name, entry] : document.at("splits").items()) {
      TokenSplit split;
      split.tokens = count_at(entry, "tokens");
      split.documents = count_at(entry, "documents");
      split.max_token_id = count_at(entry, "max_token_id");
      int64_t tokens = 0, documents = 0;
      for (const auto& shard : entry.at("shards")) {
        TokenShardEntry item;
        item.file = shard.at("file").get<std::string>();
        item.tokens = count_at(shard, "tokens");
        item.documents = count_at(shard, "documents");
        LINTIME_CHECK(!item.file.empty() && item.file.find('/') == std::string::npos, what, ": split '", name,
                      "' names shard '", item.file, "', expected a file name inside the directory");
        LINTIME_CHECK(!__builtin_add_overflow(tokens, item.tokens, &tokens) &&
                          !__builtin_add_overflow(documents, item.documents, &documents),
                      what, ": split '", name, "' counts more tokens or documents than 64 bits hold");
        split.shards.push_back(std::move(item));
      }
      LINTIME_CHECK(tokens == split.tokens && documents == split.documents, what, ": split '", name, "' counts ",
                    split.tokens, " tokens and ", split.documents, " documents, but its shards add up to ", tokens,
                    " and ", documents);
      manifest.splits.emplace(name, std::move(split));
    }
  } catch (const json::exception& error) {
    fail(what, ": ", error.what(), " (expected format_version, tokenizer {kind, vocab_size, hash}, eos_id, "
         "token_dtype and splits {name: {shards, tokens, documents, max_token_id}})");
  }
  return manifest;
}

void write_token_manifest(const std::string& dir, const TokenManifest& manifest) {
  using json = nlohmann::json;
  json document;
  document["format"] = "lintime token shards";
  document["format_version"] = manifest.format_version;
  document["tokenizer"] = {{"kind", manifest.tokenizer.kind},
                           {"vocab_size", manifest.tokenizer.vocab_size},
                           {"hash", manifest.tokenizer.hash},
                           {"source", manifest.tokenizer.source}};
  document["eos_id"] = manifest.eos_id;
  document["token_dtype"] = token_dtype_name(manifest.dtype);
  json splits = json::object();
  for (const auto& [name, split] : manifest.splits) {
    json shards = json::array();
    for (const auto& shard : split.shards)
      shards.push_back({{"file", shard.file}, {"tokens", shard.tokens}, {"documents", shard.documents}});
    splits[name] = {{"shards", shards},
                    {"tokens", split.tokens},
                    {"documents", split.documents},
                    {"max_token_id", split.max_token_id}};
  }
  document["splits"] = splits;
  const std::string text = document.dump(2) + "\n";
  make_directories(dir);
  const std::string path = manifest_path(dir);
  write_file_atomically(path, "token manifest '" + path + "'", {{text.data(), text.size()}});
}

// ---------------------------------------------------------------------------------------------
// Writer

TokenShardWriter::TokenShardWriter(std::string dir, std::string split, TokenDtype dtype, int64_t shard_tokens)
    : dir_(std::move(dir)), split_(std::move(split)), dtype_(dtype), shard_tokens_(shard_tokens) {
  LINTIME_CHECK(shard_tokens_ >= 1, "token shards: shard_tokens must be >= 1, got ", shard_tokens_);
  LINTIME_CHECK(!split_.empty() && split_.find('/') == std::string::npos, "token shards: split name '", split_,
                "' must be a plain name");
  make_directories(dir_);
}

void TokenShardWriter::add_document(std::span<const int64_t> tokens) {
  LINTIME_CHECK(!finished_, "token shards: add_document after finish");
  LINTIME_CHECK(!tokens.empty(), "token shards: a document needs at least one token (its EOS)");
  const int64_t limit = dtype_ == TokenDtype::uint16 ? 0xFFFF : 0xFFFFFFFFll;
  const int width = token_dtype_bytes(dtype_);
  bool first = true;
  for (size_t i = 0; i < tokens.size();) {
    if (buffered_tokens_ == shard_tokens_) flush();
    if (first) {
      document_starts_.push_back(static_cast<uint64_t>(buffered_tokens_));
      first = false;
    }
    const size_t take = std::min<size_t>(tokens.size() - i, shard_tokens_ - buffered_tokens_);
    const size_t offset = token_bytes_.size();
    token_bytes_.resize(offset + take * width);
    uint8_t* out = token_bytes_.data() + offset;
    for (size_t j = 0; j < take; ++j) {
      const int64_t id = tokens[i + j];
      LINTIME_CHECK(id >= 0 && id <= limit, "token shards: token id ", id, " does not fit ", token_dtype_name(dtype_));
      buffered_max_id_ = std::max(buffered_max_id_, static_cast<uint32_t>(id));
      if (width == 2) store<uint16_t>(out + 2 * j, static_cast<uint16_t>(id));
      else store<uint32_t>(out + 4 * j, static_cast<uint32_t>(id));
    }
    buffered_tokens_ += static_cast<int64_t>(take);
    i += take;
  }
  ++result_.documents;
}

void TokenShardWriter::flush() {
  if (buffered_tokens_ == 0) return;
  char name[64];
  std::snprintf(name, sizeof(name), "-%05zu.bin", result_.shards.size());
  TokenShardEntry entry;
  entry.file = split_ + name;
  entry.tokens = buffered_tokens_;
  entry.documents = static_cast<int64_t>(document_starts_.size());
  write_shard_file(dir_ + "/" + entry.file, dtype_, token_bytes_.data(), static_cast<size_t>(buffered_tokens_),
                   buffered_max_id_, document_starts_);
  result_.tokens += entry.tokens;
  result_.max_token_id = std::max<int64_t>(result_.max_token_id, buffered_max_id_);
  result_.shards.push_back(std::move(entry));
  token_bytes_.clear();
  document_starts_.clear();
  buffered_tokens_ = 0;
  buffered_max_id_ = 0;
}

TokenSplit TokenShardWriter::finish() {
  LINTIME_CHECK(!finished_, "token shards: finish called twice");
  flush();
  finished_ = true;
  token_bytes_.shrink_to_fit();
  return result_;
}

// ---------------------------------------------------------------------------------------------
// A split as one token stream

std::shared_ptr<const TokenShardSet> TokenShardSet::open(const std::string& dir, const std::string& split,
                                                         const TokenShardSetOptions& options) {
  std::shared_ptr<TokenShardSet> set(new TokenShardSet());
  set->dir_ = dir;
  set->split_ = split;
  set->manifest_ = read_token_manifest(dir);
  const TokenManifest& manifest = set->manifest_;
  auto found = manifest.splits.find(split);
  if (found == manifest.splits.end()) {
    std::string names;
    for (const auto& [name, entry] : manifest.splits) names += (names.empty() ? "" : ", ") + name;
    fail("token shards '", dir, "' have no split '", split, "' (the manifest lists: ",
         names.empty() ? "none" : names, ")");
  }
  const TokenSplit& entry = found->second;
  LINTIME_CHECK(entry.tokens > 0 && !entry.shards.empty(), "split '", split, "' of token shards '", dir,
                "' is empty: expected at least one token");
  if (options.vocab_size) {
    LINTIME_CHECK(entry.max_token_id < *options.vocab_size, "token shards '", dir, "' (split '", split,
                  "') hold token ids up to ", entry.max_token_id, ", outside the model's vocabulary of ",
                  *options.vocab_size, " (made with the ", manifest.tokenizer.kind, " tokenizer of ",
                  manifest.tokenizer.vocab_size, " tokens from '", manifest.tokenizer.source, "')");
  }
  TokenShardOpenOptions shard_options;
  shard_options.verify_checksum = options.verify_checksums;
  shard_options.vocab_size = options.vocab_size;
  for (const auto& shard_entry : entry.shards) {
    auto shard = TokenShard::open(dir + "/" + shard_entry.file, shard_options);
    LINTIME_CHECK(shard->tokens() == shard_entry.tokens && shard->documents() == shard_entry.documents,
                  where(shard->path()), " holds ", shard->tokens(), " tokens and ", shard->documents(),
                  " document starts, but manifest.json lists ", shard_entry.tokens, " and ", shard_entry.documents,
                  " (the shard and the manifest come from different runs)");
    LINTIME_CHECK(shard->dtype() == manifest.dtype, where(shard->path()), " holds ", token_dtype_name(shard->dtype()),
                  " tokens, but manifest.json says ", token_dtype_name(manifest.dtype));
    LINTIME_CHECK(shard->max_token_id() <= entry.max_token_id, where(shard->path()), " holds token id ",
                  shard->max_token_id(), ", above the split's max_token_id ", entry.max_token_id,
                  " in manifest.json (the shard and the manifest come from different runs)");
    set->shard_begin_.push_back(set->tokens_);
    set->tokens_ += shard->tokens();
    set->documents_ += shard->documents();
    set->shards_.push_back(std::move(shard));
  }
  return set;
}

void TokenShardSet::read(int64_t begin, int64_t count, int64_t* out) const {
  LINTIME_CHECK(begin >= 0 && count >= 0 && begin + count <= tokens_, "split '", split_, "' of token shards '", dir_,
                "': tokens [", begin, ", ", begin + count, ") outside [0, ", tokens_, ")");
  size_t shard = std::upper_bound(shard_begin_.begin(), shard_begin_.end(), begin) - shard_begin_.begin() - 1;
  while (count > 0) {
    const int64_t local = begin - shard_begin_[shard];
    const int64_t take = std::min(count, shards_[shard]->tokens() - local);
    shards_[shard]->read(local, take, out);
    out += take;
    begin += take;
    count -= take;
    ++shard;
  }
}

void TokenShardSet::document_starts(int64_t begin, int64_t end, std::vector<int64_t>& out) const {
  begin = std::max<int64_t>(begin, 0);
  end = std::min(end, tokens_);
  if (begin >= end) return;
  size_t shard = std::upper_bound(shard_begin_.begin(), shard_begin_.end(), begin) - shard_begin_.begin() - 1;
  for (; shard < shards_.size() && shard_begin_[shard] < end; ++shard) {
    const int64_t offset = shard_begin_[shard];
    const auto starts = shards_[shard]->document_starts();
    auto it = std::lower_bound(starts.begin(), starts.end(), static_cast<uint64_t>(std::max<int64_t>(begin - offset, 0)));
    for (; it != starts.end() && offset + static_cast<int64_t>(*it) < end; ++it) out.push_back(offset + *it);
  }
}

}  // namespace lintime::io
