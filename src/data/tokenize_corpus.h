// Tokenizing text documents into a token shard directory (io/token_shards.h), behind
// `lintime tokenize`. Documents are read in input order, tokenized in batches by several
// threads and written in input order, each followed by the EOS id, so the shards are
// byte-identical for the same inputs whatever the thread count. Validation documents come from
// explicit inputs or from a fraction of the training inputs chosen per document by a hash of its
// index (deterministic, independent of threads and batching).
#pragma once

#include "data/text_documents.h"
#include "io/token_shards.h"
#include "text/tokenizer.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lintime::data {

// A tokenizer with its identity for the manifest.
struct TokenizerSource {
  std::shared_ptr<const text::Tokenizer> tokenizer;
  io::TokenizerIdentity identity;  // kind, vocabulary size, FNV-1a 64 of `files`, the path given
  std::vector<std::string> files;  // the files the tokenizer was read from, in hashing order
};

// Loads a tokenizer from a model folder (text::load_tokenizer's order: tokenizer.model,
// tokenizer.json, vocab.json + merges.txt), a tokenizer.json, a SentencePiece tokenizer.model,
// or a GPT-2 vocabulary "[PREFIX]vocab.json" with "[PREFIX]merges.txt" beside it (e.g.
// gpt2-vocab.json and gpt2-merges.txt). The same files hash the same whichever way they are named.
TokenizerSource load_tokenizer_source(const std::string& path);

struct TokenizeCorpusOptions {
  std::vector<std::string> inputs;      // training documents (a val_fraction of them go to val)
  std::vector<std::string> val_inputs;  // explicit validation documents (excludes val_fraction)
  std::string out_dir;
  double val_fraction = 0;              // in [0, 1)
  int threads = 1;
  TextDocumentOptions documents;
  int64_t shard_tokens = int64_t{1} << 27;
  std::optional<int64_t> eos_id;        // default: the tokenizer's EOS
  bool overwrite = false;               // replace a directory that already holds a manifest
  bool show_progress = true;            // progress bar on stderr
};

struct TokenizeCorpusResult {
  io::TokenManifest manifest;
  int64_t empty_documents = 0;  // documents without text, left out
  double seconds = 0;
};

// Writes the shards, then manifest.json last (atomically), so an interrupted run leaves no
// directory that looks complete. One-line errors for bad options, unreadable inputs, documents
// that do not tokenize (naming FILE:LINE), a tokenizer without EOS when eos_id is unset, and an
// empty train or val split.
TokenizeCorpusResult tokenize_corpus(const TokenizerSource& source, const TokenizeCorpusOptions& options);

// Whether training document `index` (0-based, counting non-empty documents over all inputs)
// goes to the validation split under `val_fraction`.
bool is_validation_document(int64_t index, double val_fraction);

}  // namespace lintime::data
