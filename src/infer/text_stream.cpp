#include "infer/text_stream.h"

#include <utility>

namespace lintime::infer {

size_t complete_utf8_prefix(const std::string& text) {
  size_t end = text.size(), back = 0;
  while (back < 4 && back < end && (static_cast<unsigned char>(text[end - 1 - back]) & 0xC0) == 0x80) ++back;
  if (back == end) return end;
  const auto lead = static_cast<unsigned char>(text[end - 1 - back]);
  const size_t need = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;
  return back + 1 >= need ? end : end - back - 1;
}

TextStream::TextStream(std::function<std::string(const std::vector<int64_t>&)> decode) : decode_(std::move(decode)) {}

std::string TextStream::push(const std::vector<int64_t>& tokens) {
  const std::string text = decode_(tokens);
  const size_t ready = complete_utf8_prefix(text);
  if (ready <= released_) return "";
  std::string piece = text.substr(released_, ready - released_);
  released_ = ready;
  return piece;
}

std::string TextStream::finish(const std::vector<int64_t>& tokens) {
  const std::string text = decode_(tokens);
  std::string rest = text.size() > released_ ? text.substr(released_) : "";
  released_ = text.size();
  return rest;
}

}  // namespace lintime::infer
