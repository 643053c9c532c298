#include "text/tokenizer.h"

#include "core/error.h"
#include "text/byte_level_bpe.h"
#include "text/sentencepiece_tokenizer.h"

#include <filesystem>

namespace lintime::text {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  LINTIME_CHECK(fs::is_directory(dir), "model folder '", model_dir, "' does not exist");
  if (fs::is_regular_file(dir / "tokenizer.model")) {
    return std::make_unique<SentencePieceTokenizer>((dir / "tokenizer.model").string());
  }
  if (fs::is_regular_file(dir / "tokenizer.json")) {
    return ByteLevelBpeTokenizer::from_tokenizer_json((dir / "tokenizer.json").string());
  }
  if (fs::is_regular_file(dir / "vocab.json") && fs::is_regular_file(dir / "merges.txt")) {
    return ByteLevelBpeTokenizer::from_vocab_and_merges((dir / "vocab.json").string(), (dir / "merges.txt").string());
  }
  fail("model folder '", model_dir,
       "' holds no tokenizer: expected tokenizer.model (SentencePiece), tokenizer.json, or vocab.json and merges.txt");
}

}  // namespace lintime::text
