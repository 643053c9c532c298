// Tokenizing documents into token shards: batches of documents are tokenized by a few threads
// (each takes the next document from an atomic counter) and appended to the split writers in
// input order. File-system work uses POSIX calls (see train/checkpoint.cpp on std::filesystem).
#include "data/tokenize_corpus.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/progress.h"
#include "text/byte_level_bpe.h"
#include "text/sentencepiece_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace lintime::data {

namespace {

// A batch holds at least this much text per thread (amortises starting threads, keeps memory small).
constexpr size_t kBatchBytesPerThread = size_t{1} << 20;
constexpr size_t kMaxBatchDocuments = 65536;
constexpr uint64_t kValidationSeed = 0x6c696e74696d6521ull;  // "lintime!"

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Tokens of every document of the batch, in order; the first failure (in document order) is
// rethrown naming the document.
std::vector<std::vector<int64_t>> encode_batch(const text::Tokenizer& tokenizer, const std::vector<TextDocument>& batch,
                                               int threads) {
  std::vector<std::vector<int64_t>> tokens(batch.size());
  std::vector<std::exception_ptr> errors(batch.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < batch.size();) {
      try {
        tokens[i] = tokenizer.encode(batch[i].text);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const int helpers = std::min<int>(threads, static_cast<int>(batch.size())) - 1;
  std::vector<std::thread> pool;
  for (int t = 0; t < helpers; ++t) pool.emplace_back(work);
  work();
  for (auto& thread : pool) thread.join();
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!errors[i]) continue;
    try {
      std::rethrow_exception(errors[i]);
    } catch (const std::exception& error) {
      fail(batch[i].origin, ": cannot tokenize this document: ", error.what());
    }
  }
  return tokens;
}

// Removes a previous run's manifest (first, so the directory stops looking complete) and shards.
void clear_previous_run(const std::string& dir) {
  io::TokenManifest previous;
  bool readable = true;
  try {
    previous = io::read_token_manifest(dir);
  } catch (const Error&) {
    readable = false;
  }
  const std::string manifest = dir + "/" + io::kTokenManifestFile;
  LINTIME_CHECK(::unlink(manifest.c_str()) == 0, "cannot remove '", manifest, "' to overwrite it");
  if (!readable) return;
  for (const auto& [name, split] : previous.splits)
    for (const auto& shard : split.shards) ::unlink((dir + "/" + shard.file).c_str());
}

}  // namespace

TokenizerSource load_tokenizer_source(const std::string& path) {
  TokenizerSource source;
  std::string kind_path = path;
  if (is_directory(path)) {
    const std::string dir = path + "/";
    if (is_file(dir + "tokenizer.model")) kind_path = dir + "tokenizer.model";
    else if (is_file(dir + "tokenizer.json")) kind_path = dir + "tokenizer.json";
    else kind_path = dir + "vocab.json";
    source.tokenizer = text::load_tokenizer(path);  // its error lists what it looked for
  } else {
    LINTIME_CHECK(is_file(path), "tokenizer '", path,
                  "' does not exist: expected a model folder, a tokenizer.json, a tokenizer.model, or a vocab.json "
                  "with merges.txt beside it");
  }
  if (ends_with(kind_path, "vocab.json")) {
    const std::string merges = kind_path.substr(0, kind_path.size() - 10) + "merges.txt";
    LINTIME_CHECK(is_file(merges), "tokenizer '", path, "': expected the merges file '", merges, "' beside '",
                  kind_path, "'");
    if (!source.tokenizer) source.tokenizer = text::ByteLevelBpeTokenizer::from_vocab_and_merges(kind_path, merges);
    source.files = {kind_path, merges};
  } else if (ends_with(kind_path, ".json")) {
    if (!source.tokenizer) source.tokenizer = text::ByteLevelBpeTokenizer::from_tokenizer_json(kind_path);
    source.files = {kind_path};
  } else if (ends_with(kind_path, ".model")) {
    if (!source.tokenizer) source.tokenizer = std::make_shared<text::SentencePieceTokenizer>(kind_path);
    source.files = {kind_path};
  } else {
    fail("tokenizer '", path,
         "': expected a model folder, a tokenizer.json, a tokenizer.model (SentencePiece), or a vocab.json with "
         "merges.txt beside it");
  }
  source.identity.kind = source.tokenizer->kind();
  source.identity.vocab_size = source.tokenizer->vocab_size();
  source.identity.hash = io::hash_files_fnv1a64(source.files);
  source.identity.source = path;
  return source;
}

bool is_validation_document(int64_t index, double val_fraction) {
  if (val_fraction <= 0) return false;
  const uint64_t bits = splitmix64(kValidationSeed ^ splitmix64(static_cast<uint64_t>(index)));
  return static_cast<double>(bits >> 11) * 0x1.0p-53 < val_fraction;
}

TokenizeCorpusResult tokenize_corpus(const TokenizerSource& source, const TokenizeCorpusOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const text::Tokenizer& tokenizer = *source.tokenizer;
  LINTIME_CHECK(!options.inputs.empty(), "tokenize: no inputs given (expected text or JSON-lines files)");
  LINTIME_CHECK(!options.out_dir.empty(), "tokenize: no output directory given (--out DIR)");
  LINTIME_CHECK(options.val_fraction >= 0 && options.val_fraction < 1, "tokenize: --val-fraction must lie in [0, 1), got ",
                options.val_fraction);
  LINTIME_CHECK(options.val_fraction == 0 || options.val_inputs.empty(),
                "tokenize: give either --val-fraction or --val inputs, not both");
  LINTIME_CHECK(options.threads >= 1, "tokenize: --threads must be >= 1, got ", options.threads);
  LINTIME_CHECK(options.shard_tokens >= 1, "tokenize: --shard-tokens must be >= 1, got ", options.shard_tokens);

  const std::optional<int64_t> eos = options.eos_id ? options.eos_id : tokenizer.eos_id();
  LINTIME_CHECK(eos.has_value(), "tokenize: the ", tokenizer.kind(), " tokenizer from '", source.identity.source,
                "' has no EOS token: pass --eos-id N");
  LINTIME_CHECK(*eos >= 0 && *eos < (int64_t{1} << 32), "tokenize: --eos-id must lie in [0, 2^32), got ", *eos);
  const int64_t vocab_size = std::max(tokenizer.vocab_size(), *eos + 1);

  // Open every input before anything is written: a missing one fails at once.
  TextDocumentReader train_reader(options.inputs, options.documents);
  TextDocumentReader val_reader(options.val_inputs, options.documents);
  const std::string manifest_file = options.out_dir + "/" + io::kTokenManifestFile;
  if (is_file(manifest_file)) {
    LINTIME_CHECK(options.overwrite, "tokenize: --out '", options.out_dir,
                  "' already holds token shards (manifest.json): pass --overwrite to replace them");
    clear_previous_run(options.out_dir);
  }

  io::TokenManifest manifest;
  manifest.tokenizer = source.identity;
  manifest.eos_id = *eos;
  manifest.dtype = io::token_dtype_for_vocab(vocab_size);
  io::TokenShardWriter train_writer(options.out_dir, "train", manifest.dtype, options.shard_tokens);
  io::TokenShardWriter val_writer(options.out_dir, "val", manifest.dtype, options.shard_tokens);
  const bool has_val = options.val_fraction > 0 || !options.val_inputs.empty();

  std::unique_ptr<ProgressReporter> progress;
  const uint64_t total_bytes = train_reader.total_bytes() + val_reader.total_bytes();
  if (options.show_progress) {
    ProgressOptions progress_options;
    progress_options.label = "tokenize (bytes)";
    progress_options.total = static_cast<int64_t>(total_bytes);
    progress_options.log_every_steps = 0;
    progress_options.log_every_seconds = 10;
    progress = std::make_unique<ProgressReporter>(progress_options);
  }
  int64_t tokens_written = 0, train_documents = 0, empty_documents = 0;
  uint64_t bytes_before = 0;
  auto seconds_since_start = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  // Reads, tokenizes and writes one reader's documents; `explicit_val` sends all of them to val.
  auto run = [&](TextDocumentReader& reader, bool explicit_val) {
    std::vector<TextDocument> batch;
    TextDocument document;
    bool more = true;
    while (more) {
      batch.clear();
      size_t batch_bytes = 0;
      while (batch_bytes < kBatchBytesPerThread * options.threads && batch.size() < kMaxBatchDocuments &&
             (more = reader.next(document))) {
        if (document.text.empty()) {
          ++empty_documents;
          continue;
        }
        batch_bytes += document.text.size();
        batch.push_back(std::move(document));
      }
      auto tokens = encode_batch(tokenizer, batch, options.threads);
      for (size_t i = 0; i < batch.size(); ++i) {
        tokens[i].push_back(*eos);
        const bool to_val = explicit_val || is_validation_document(train_documents++, options.val_fraction);
        (to_val ? val_writer : train_writer).add_document(tokens[i]);
        tokens_written += static_cast<int64_t>(tokens[i].size());
      }
      if (progress) {
        // Below the total until the splits are checked: the last line is drawn by finish().
        const double elapsed = seconds_since_start();
        const uint64_t done = std::min(bytes_before + reader.bytes_consumed(), total_bytes - 1);
        progress->update(static_cast<int64_t>(done),
                         {{"tokens", static_cast<double>(tokens_written)},
                          {"tok/s", elapsed > 0 ? tokens_written / elapsed : 0.0}});
      }
    }
    bytes_before += reader.total_bytes();
  };
  run(train_reader, false);
  run(val_reader, true);

  const io::TokenSplit train = train_writer.finish();
  const io::TokenSplit val = val_writer.finish();
  LINTIME_CHECK(train.tokens > 0, "tokenize: no training documents: the inputs hold no text",
                options.val_fraction > 0 ? " outside the validation fraction" : "");
  if (!options.val_inputs.empty()) {
    LINTIME_CHECK(val.tokens > 0, "tokenize: the --val inputs hold no text (expected at least one document)");
  } else if (options.val_fraction > 0) {
    LINTIME_CHECK(val.tokens > 0, "tokenize: --val-fraction ", options.val_fraction, " put none of the ",
                  train.documents, " documents into val: expected at least one (split documents on blank lines, "
                  "raise the fraction, or pass --val INPUT...)");
  }
  if (progress) {
    const double elapsed = seconds_since_start();
    progress->update(static_cast<int64_t>(total_bytes), {{"tokens", static_cast<double>(tokens_written)},
                                                         {"tok/s", elapsed > 0 ? tokens_written / elapsed : 0.0}});
    progress->finish();
  }
  manifest.splits["train"] = train;
  if (has_val) manifest.splits["val"] = val;
  io::write_token_manifest(options.out_dir, manifest);

  TokenizeCorpusResult result;
  result.manifest = std::move(manifest);
  result.empty_documents = empty_documents;
  result.seconds = seconds_since_start();
  return result;
}

}  // namespace lintime::data
