// SentencePiece models (tokenizer.model of Llama, Mistral) through Debian's libsentencepiece.
#pragma once

#include "text/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace lintime::text {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Throws lintime::Error naming the file when it is missing or not a SentencePiece model.
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override;
  std::optional<int64_t> bos_id() const override;
  std::optional<int64_t> eos_id() const override;
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace lintime::text
