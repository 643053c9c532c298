// Token shards for the language-model training tests: random documents of ids below a small
// vocabulary (each ending with its EOS) written as a train and a val split, and a tiny GSA
// config.json. Header-only: only the tests that include it link the io library's shard writer.
#pragma once

#include "io/token_shards.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace lintime::testing {

namespace fs = std::filesystem;

constexpr int64_t kLmTestVocab = 64;
constexpr int64_t kLmTestEos = 63;

inline fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("lintime-lm-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

// A shard directory of `documents` (each ends with its EOS) split into train and val.
inline void write_shards(const fs::path& dir, const std::vector<std::vector<int64_t>>& train,
                         const std::vector<std::vector<int64_t>>& val, int64_t eos, int64_t vocab) {
  fs::create_directories(dir);
  lintime::io::TokenManifest manifest;
  manifest.tokenizer = {"test ids", vocab, "0", ""};
  manifest.eos_id = eos;
  manifest.dtype = lintime::io::token_dtype_for_vocab(vocab);
  for (const auto& [split, documents] : {std::pair{"train", &train}, std::pair{"val", &val}}) {
    lintime::io::TokenShardWriter writer(dir.string(), split, manifest.dtype, 1000);
    for (const auto& document : *documents) writer.add_document(document);
    manifest.splits[split] = writer.finish();
  }
  lintime::io::write_token_manifest(dir.string(), manifest);
}

inline std::vector<std::vector<int64_t>> random_documents(int count, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<std::vector<int64_t>> documents;
  for (int i = 0; i < count; ++i) {
    std::vector<int64_t> document(3 + random() % 38);
    for (auto& token : document) token = static_cast<int64_t>(random() % kLmTestEos);
    document.push_back(kLmTestEos);
    documents.push_back(document);
  }
  return documents;
}

inline nlohmann::json tiny_gsa_config(int64_t vocab) {
  return {{"model_type", "gsa"},  {"vocab_size", vocab},     {"hidden_size", 32},          {"num_hidden_layers", 2},
          {"num_heads", 2},       {"num_slots", 8},          {"intermediate_size", 64},    {"use_short_conv", true},
          {"norm_eps", 1e-6},     {"tie_word_embeddings", true}, {"gate_logit_normalizer", 8}};
}


}  // namespace lintime::testing
