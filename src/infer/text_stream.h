// Streaming generated text: tokens come one at a time, but a token may end in the middle of a
// UTF-8 character (byte-level BPE splits them), so only the text up to the last whole character
// is released; the rest follows with the next tokens or at the end.
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
  // Whatever is left, whole or not (at the end of generation).
  std::string finish(const std::vector<int64_t>& tokens);

 private:
  std::function<std::string(const std::vector<int64_t>&)> decode_;
  size_t released_ = 0;
};

}  // namespace lintime::infer
