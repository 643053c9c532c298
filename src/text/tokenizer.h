// Text <-> token ids for the checkpoints lintime runs: SentencePiece models (tokenizer.model:
// Llama, Mistral) and GPT-2's byte-level BPE (tokenizer.json, or vocab.json + merges.txt: the
// BASED checkpoints). load_tokenizer picks the one a model folder holds.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lintime::text {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of UTF-8 `text`, without BOS or EOS. Throws lintime::Error on malformed UTF-8.
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  // The text of `ids` (bytes as the tokens hold them; a cut inside a multi-byte character stays
  // cut). Throws lintime::Error naming an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int64_t> bos_id() const = 0;
  virtual std::optional<int64_t> eos_id() const = 0;
  // "sentencepiece" or "byte-level BPE", for messages.
  virtual std::string kind() const = 0;
};

// From a model folder: tokenizer.model (SentencePiece) first, then tokenizer.json, then
// vocab.json + merges.txt. Throws lintime::Error listing what it looked for.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

}  // namespace lintime::text
