#include "fuzz/fuzz_targets.h"

#include "core/config_reader.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "io/token_shards.h"
#include "io/torch_checkpoint.h"
#include "models/architecture.h"
#include "serve/openai_api.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "train/config_document.h"
#include "train/lm_config.h"
#include "train/mqar_config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <typeinfo>
#include <unistd.h>

namespace lintime::fuzz {
namespace {

namespace fs = std::filesystem;

// A folder of this process's own for the files the readers open (one input at a time).
const fs::path& scratch() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("lintime-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] { std::error_code ignored; fs::remove_all(fs::temp_directory_path() / ("lintime-fuzz-" + std::to_string(::getpid())), ignored); });
    return d;
  }();
  return dir;
}

fs::path write_file(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// A fresh folder holding `names[i]` = parts[i] (a part that is absent leaves its file out).
fs::path write_folder(const char* folder, const std::vector<const char*>& names, std::string_view input) {
  const fs::path dir = scratch() / folder;
  std::error_code ignored;
  fs::remove_all(dir, ignored);
  fs::create_directories(dir);
  const auto parts = split_parts(input, names.size());
  for (size_t i = 0; i < parts.size(); ++i) write_file(dir / names[i], parts[i]);
  return dir;
}

void safetensors_file(std::string_view input) {
  const fs::path path = write_file(scratch() / "model.safetensors", input);
  for (const auto& [name, tensor] : io::load_safetensors(path.string())) (void)tensor.sum();
}

void safetensors_index(std::string_view input) {
  const fs::path dir = write_folder("index", {"model.safetensors.index.json"}, input);
  (void)io::read_shard_index((dir / "model.safetensors.index.json").string(), "safetensors index");
}

void torch_checkpoint(std::string_view input) {
  const fs::path path = write_file(scratch() / "pytorch_model.bin", input);
  const io::TorchCheckpoint checkpoint(path.string());
  for (const auto& name : checkpoint.names()) (void)checkpoint.get(name).sum();
}

// A model folder's config.json through the architecture registry: detection, every key's
// parsing and bounds, the parameter count and state size (no weights are allocated).
void model_config(std::string_view input) {
  const fs::path path = write_file(scratch() / "config.json", input);
  const nlohmann::json config = config::read_json_file(path.string(), "config.json");
  (void)models::architecture_of(config, path.string()).describe(config);
}

// A `lintime train` config (TOML), either task.
void train_config(std::string_view input) {
  const fs::path path = write_file(scratch() / "train.toml", input);
  const nlohmann::json document = train::read_toml_file(path.string());
  if (train::training_task_of(document, path.string()) == "lm") {
    (void)train::load_lm_train_config(path.string(), {});
  } else {
    (void)train::load_mqar_train_config(path.string(), {});
  }
}

void use_tokenizer(const text::Tokenizer& tokenizer, std::string_view text) {
  const auto ids = tokenizer.encode(text);
  (void)tokenizer.decode(ids);
  std::vector<int64_t> raw;
  for (size_t i = 0; i + 1 < text.size() && raw.size() < 64; i += 2) {
    raw.push_back((static_cast<uint8_t>(text[i]) << 8 | static_cast<uint8_t>(text[i + 1])) % (tokenizer.vocab_size() + 2));
  }
  (void)tokenizer.decode(raw);  // ids past the vocabulary must be refused, not read
}

// GPT-2's byte-level BPE: vocab.json, merges.txt, then a text to encode.
void bpe_tokenizer(std::string_view input) {
  const fs::path dir = write_folder("bpe", {"vocab.json", "merges.txt", "text"}, input);
  const auto tokenizer = text::load_tokenizer(dir.string());
  const auto parts = split_parts(input, 3);
  use_tokenizer(*tokenizer, parts.size() == 3 ? parts[2] : std::string_view("hello world"));
}

// A Hugging Face tokenizer.json, then a text to encode.
void tokenizer_json(std::string_view input) {
  const fs::path dir = write_folder("tokenizer-json", {"tokenizer.json", "text"}, input);
  const auto tokenizer = text::load_tokenizer(dir.string());
  const auto parts = split_parts(input, 2);
  use_tokenizer(*tokenizer, parts.size() == 2 ? parts[1] : std::string_view("hello world"));
}

// A `lintime tokenize` folder: manifest.json and one train shard, read whole.
void token_shards(std::string_view input) {
  const fs::path dir = write_folder("shards", {"manifest.json", "train-00000.bin"}, input);
  io::TokenShardSetOptions options;
  options.vocab_size = 50257;
  const auto shards = io::TokenShardSet::open(dir.string(), "train", options);
  std::vector<int64_t> tokens(static_cast<size_t>(std::min<int64_t>(shards->tokens(), 1 << 16)));
  shards->read(0, static_cast<int64_t>(tokens.size()), tokens.data());
  std::vector<int64_t> starts;
  shards->document_starts(0, static_cast<int64_t>(tokens.size()), starts);
}

// A request body as the server reads it (POST /v1/completions and /v1/chat/completions).
void completion_request(std::string_view input) {
  const nlohmann::json body = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return;  // the server answers 400 for text that is not JSON
  for (const serve::Endpoint endpoint : {serve::Endpoint::kCompletions, serve::Endpoint::kChatCompletions}) {
    try {
      const auto request = serve::parse_completion_request(body, endpoint);
      if (endpoint == serve::Endpoint::kChatCompletions) {
        for (const auto format : {serve::ChatFormat::kPlain, serve::ChatFormat::kChatML, serve::ChatFormat::kLlama3}) {
          (void)serve::format_chat(request.messages, format);
        }
      }
    } catch (const serve::ApiError& error) {
      if (error.status() < 400 || error.status() >= 500) throw;  // a refusal must be a client error
      if (std::string(error.what()).find('\n') != std::string::npos) throw;
    }
  }
}

void utf8(std::string_view input) { (void)text::decode_utf8(input); }

}  // namespace

std::vector<std::string_view> split_parts(std::string_view input, size_t max_parts) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = input.find(kPartSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + kPartSeparator.size());
  }
  parts.push_back(input);
  return parts;
}

const std::vector<FuzzTarget>& fuzz_targets() {
  static const std::vector<FuzzTarget> targets = {
      {"safetensors", "io::load_safetensors (a .safetensors file)", safetensors_file},
      {"safetensors_index", "io::read_shard_index (model.safetensors.index.json)", safetensors_index},
      {"torch_checkpoint", "io::TorchCheckpoint (a PyTorch zip/pickle checkpoint)", torch_checkpoint},
      {"model_config", "config.json through the architecture registry", model_config},
      {"train_config", "a `lintime train` TOML config (MQAR or LM)", train_config},
      {"bpe_tokenizer", "vocab.json + merges.txt (GPT-2 BPE), encode and decode", bpe_tokenizer},
      {"tokenizer_json", "tokenizer.json, encode and decode", tokenizer_json},
      {"token_shards", "manifest.json + a token shard, read whole", token_shards},
      {"completion_request", "the server's completion and chat request bodies", completion_request},
      {"utf8", "text::decode_utf8", utf8},
  };
  return targets;
}

const FuzzTarget* find_fuzz_target(std::string_view name) {
  for (const FuzzTarget& target : fuzz_targets()) {
    if (name == target.name) return &target;
  }
  return nullptr;
}

std::string run_fuzz_input(const FuzzTarget& target, std::string_view input) {
  try {
    target.run(input);
    return "";
  } catch (const Error& error) {
    const std::string message = error.what();
    if (message.find('\n') == std::string::npos && !message.empty()) return "";
    return "lintime::Error over several lines or empty: " + message;
  } catch (const std::exception& error) {
    return std::string("escaped ") + typeid(error).name() + ": " + error.what();
  } catch (...) {
    return "escaped a non-std exception";
  }
}

}  // namespace lintime::fuzz
