#include "text/sentencepiece_tokenizer.h"

#include "core/error.h"
#include "text/unicode.h"

#include <sentencepiece_processor.h>

#include <sys/stat.h>

namespace lintime::text {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  struct stat file_stat {};  // POSIX stat: see tokenizer.cpp on std::filesystem
  LINTIME_CHECK(::stat(model_path.c_str(), &file_stat) == 0 && S_ISREG(file_stat.st_mode), "SentencePiece model '",
                model_path, "' does not exist");
  const auto status = processor_->Load(model_path);
  LINTIME_CHECK(status.ok(), "'", model_path, "' is not a SentencePiece model: ", status.ToString());
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int64_t> SentencePieceTokenizer::encode(std::string_view text) const {
  decode_utf8(text);  // rejects malformed UTF-8 with the byte offset (SentencePiece would not say)
  std::vector<int> pieces;
  const auto status = processor_->Encode(text, &pieces);
  LINTIME_CHECK(status.ok(), "SentencePiece encode failed: ", status.ToString());
  return std::vector<int64_t>(pieces.begin(), pieces.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  for (int64_t id : ids) {
    LINTIME_CHECK(id >= 0 && id < vocab_size(), "SentencePiece: token id ", id, " is not in the vocabulary (size ",
                  vocab_size(), ")");
    pieces.push_back(static_cast<int>(id));
  }
  std::string text;
  const auto status = processor_->Decode(pieces, &text);
  LINTIME_CHECK(status.ok(), "SentencePiece decode failed: ", status.ToString());
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const { return processor_->GetPieceSize(); }

std::optional<int64_t> SentencePieceTokenizer::bos_id() const {
  const int id = processor_->bos_id();
  return id >= 0 ? std::optional<int64_t>(id) : std::nullopt;
}

std::optional<int64_t> SentencePieceTokenizer::eos_id() const {
  const int id = processor_->eos_id();
  return id >= 0 ? std::optional<int64_t>(id) : std::nullopt;
}

}  // namespace lintime::text
