// `lintime tokenize --tokenizer T INPUT... --out DIR [--val-fraction F | --val INPUT...]`: text and
// JSON-lines documents (gzip too) into a token shard directory (io/token_shards.h) for LM training.
// Prints one summary line; the manifest is written last, so an interrupted run leaves none.
#include "tools/cli/commands.h"
#include "tools/cli/validators.h"

#include "core/progress.h"
#include "data/tokenize_corpus.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

namespace lintime::cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  data::TokenizeCorpusOptions options;
  int64_t eos_id = -1;
};

std::string describe_split(const char* name, const io::TokenSplit& split) {
  char line[192];
  std::snprintf(line, sizeof(line), "%s %lld documents, %lld tokens in %zu shard%s", name,
                static_cast<long long>(split.documents), static_cast<long long>(split.tokens), split.shards.size(),
                split.shards.size() == 1 ? "" : "s");
  return line;
}

int run_tokenize(TokenizeArgs& args) {
  if (args.eos_id >= 0) args.options.eos_id = args.eos_id;
  const data::TokenizerSource source = data::load_tokenizer_source(args.tokenizer);
  // A run that fails (an empty or unreadable input, bad UTF-8) leaves no folder it created.
  const bool out_existed = std::filesystem::exists(args.options.out_dir);
  data::TokenizeCorpusResult result;
  try {
    result = data::tokenize_corpus(source, args.options);
  } catch (...) {
    std::error_code ignored;
    if (!out_existed) std::filesystem::remove_all(args.options.out_dir, ignored);
    throw;
  }
  const io::TokenManifest& manifest = result.manifest;
  std::string splits = describe_split("train", manifest.splits.at("train"));
  if (manifest.splits.count("val")) splits += "; " + describe_split("val", manifest.splits.at("val"));
  int64_t tokens = 0;
  for (const auto& [name, split] : manifest.splits) tokens += split.tokens;
  std::printf("tokenize: wrote %s: %s; %s ids of the %s tokenizer (vocabulary %lld, EOS %lld)%s; %.1f s, %s tokens/s\n",
              args.options.out_dir.c_str(), splits.c_str(), io::token_dtype_name(manifest.dtype),
              manifest.tokenizer.kind.c_str(), static_cast<long long>(manifest.tokenizer.vocab_size),
              static_cast<long long>(manifest.eos_id),
              result.empty_documents > 0 ? (", " + std::to_string(result.empty_documents) + " empty documents left out").c_str() : "",
              result.seconds,
              format_value(result.seconds > 0 ? tokens / result.seconds : 0.0).c_str());
  return 0;
}

}  // namespace

std::function<int()> add_tokenize_command(CLI::App& app) {
  auto* command = app.add_subcommand("tokenize", "Tokenize text or JSON-lines documents into token shards for LM training");
  auto args = std::make_shared<TokenizeArgs>();
  args->options.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  command->add_option("INPUT", args->options.inputs,
                      "Text files (one document each, or split on blank lines) or JSON-lines files with a \"text\" "
                      "field (.jsonl/.ndjson/.json); .gz compressed too")
      ->required();
  command->add_option("--tokenizer", args->tokenizer,
                      "Model folder, tokenizer.json, tokenizer.model, or a vocab.json with merges.txt beside it")
      ->required();
  command->add_option("--out", args->options.out_dir, "Output directory for the shards and manifest.json")->required()
      ->check(non_empty());
  auto* fraction = command->add_option("--val-fraction", args->options.val_fraction,
                                       "Send this fraction of the documents to the val split (per document, deterministic)")
      ->check(finite_real());
  auto* val = command->add_option("--val", args->options.val_inputs, "Inputs for the val split");
  fraction->excludes(val);
  command->add_option("--threads", args->options.threads, "Tokenizing threads (default: the CPU count)")
      ->check(integer_in(1, kMaxThreads));
  command->add_flag("--split-blank-lines", args->options.documents.split_blank_lines,
                    "Text files: a document per run of non-blank lines (default: one per file)");
  command->add_option("--shard-tokens", args->options.shard_tokens, "Tokens per shard file (default 2^27)")
      ->check(integer_in(1, int64_t{1} << 40));
  command->add_option("--eos-id", args->eos_id, "Id appended after every document (default: the tokenizer's EOS; an id past the vocabulary widens it, for a tokenizer without one)")
      ->check(integer_in(0, (int64_t{1} << 31) - 1));
  command->add_flag("--overwrite", args->options.overwrite, "Replace token shards already in --out");
  return [args]() { return run_tokenize(*args); };
}

}  // namespace lintime::cli
