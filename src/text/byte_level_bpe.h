// GPT-2's byte-level BPE: text is split by GPT-2's pre-tokenizer pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (a hand-written scanner with the same alternation order), each piece's UTF-8 bytes are
// mapped to printable symbols (bytes_to_unicode) and merged pair by pair, lowest merge rank
// first. Added tokens (tokenizer.json's added_tokens; <|endoftext|> for vocab.json + merges.txt)
// are matched whole before that.
#pragma once

#include "text/tokenizer.h"

#include <array>
#include <mutex>
#include <unordered_map>

namespace lintime::text {

class ByteLevelBpeTokenizer : public Tokenizer {
 public:
  static std::unique_ptr<ByteLevelBpeTokenizer> from_vocab_and_merges(const std::string& vocab_json_path,
                                                                      const std::string& merges_txt_path);
  // Hugging Face tokenizer.json with a BPE model and a ByteLevel pre-tokenizer.
  static std::unique_ptr<ByteLevelBpeTokenizer> from_tokenizer_json(const std::string& path);

  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  std::optional<int64_t> bos_id() const override { return end_of_text_; }
  std::optional<int64_t> eos_id() const override { return end_of_text_; }
  std::string kind() const override { return "byte-level BPE"; }

  // The pre-tokenizer alone: the pieces of `text` (exposed for tests).
  static std::vector<std::string> pre_tokenize(std::string_view text);

 private:
  // The readers behind from_vocab_and_merges / from_tokenizer_json (which turn JSON type errors
  // into one-line lintime::Error messages).
  static std::unique_ptr<ByteLevelBpeTokenizer> read_vocab_and_merges(const std::string& vocab_json_path,
                                                                      const std::string& merges_path);
  static std::unique_ptr<ByteLevelBpeTokenizer> read_tokenizer_json(const std::string& path);

  ByteLevelBpeTokenizer() = default;
  void finish(const std::string& source);
  void encode_piece(const std::string& piece, std::vector<int64_t>& out) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int> merge_rank_;  // "left right" -> rank
  std::vector<std::pair<std::string, int64_t>> added_tokens_;  // longest content first
  std::vector<bool> is_added_;
  bool add_prefix_space_ = false;
  std::optional<int64_t> end_of_text_;
  std::array<std::string, 256> byte_symbol_;
  std::unordered_map<char32_t, unsigned char> symbol_byte_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

}  // namespace lintime::text
