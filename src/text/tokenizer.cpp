#include "text/tokenizer.h"

#include "core/error.h"
#include "core/paths.h"
#include "text/byte_level_bpe.h"
#include "text/sentencepiece_tokenizer.h"

#include <sys/stat.h>

namespace lintime::text {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  if (const std::string problem = model_folder_problem(model_dir); !problem.empty()) fail(problem);
  const std::string dir = model_dir + "/";
  if (is_file(dir + "tokenizer.model")) return std::make_unique<SentencePieceTokenizer>(dir + "tokenizer.model");
  if (is_file(dir + "tokenizer.json")) return ByteLevelBpeTokenizer::from_tokenizer_json(dir + "tokenizer.json");
  if (is_file(dir + "vocab.json") && is_file(dir + "merges.txt")) {
    return ByteLevelBpeTokenizer::from_vocab_and_merges(dir + "vocab.json", dir + "merges.txt");
  }
  fail("model folder '", model_dir,
       "' holds no tokenizer: expected tokenizer.model (SentencePiece), tokenizer.json, or vocab.json and merges.txt");
}

}  // namespace lintime::text
