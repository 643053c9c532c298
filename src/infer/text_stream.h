// Streaming generated text: tokens come one at a time, but a token may end in the middle of a
// UTF-8 character (byte-level BPE splits them), so only the text up to the last whole character
// is released; the rest follows with the next tokens or at the end. Each push decodes only a
// window of the last tokens (from where the released text last ended on a whole character, as
// Hugging Face's text-generation-inference does), so a long stream costs time linear in its
// length rather than decoding every token again at every step. Both texts a push compares start
// at the same token, so a tokenizer that treats the first token of a decode differently
// (SentencePiece drops a leading space) gives the same pieces as decoding everything.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lintime::infer {

// The length of the longest prefix of `text` that ends on a whole UTF-8 character.
size_t complete_utf8_prefix(const std::string& text);

class TextStream {
 public:
  // `decode`: the text of a list of token ids (a tokenizer's decode).
  explicit TextStream(std::function<std::string(const std::vector<int64_t>&)> decode);
  // The text that `tokens` (all tokens so far) adds to what was released, up to the last whole
  // character.
  std::string push(const std::vector<int64_t>& tokens);
  // Whatever is left, whole or not (at the end of generation); "" when called again.
  std::string finish(const std::vector<int64_t>& tokens);
  // Everything released so far (the pieces joined).
  const std::string& text() const { return text_; }

 private:
  // The window's text beyond what is released, cut to whole characters unless `finished`.
  std::string advance(const std::vector<int64_t>& tokens, bool finished);

  std::function<std::string(const std::vector<int64_t>&)> decode_;
  size_t window_start_ = 0;   // the first token of the window
  size_t window_read_ = 0;    // tokens before this were released whole when the window began
  size_t window_released_ = 0;  // bytes of the window's text beyond window_read_'s, released
  std::string text_;
};

}  // namespace lintime::infer
