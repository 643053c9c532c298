#include "infer/text_stream.h"

#include <algorithm>
#include <cstddef>
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

std::string TextStream::advance(const std::vector<int64_t>& tokens, bool finished) {
  const auto from = [&](size_t first, size_t end) {
    return decode_(std::vector<int64_t>(tokens.begin() + static_cast<std::ptrdiff_t>(first),
                                        tokens.begin() + static_cast<std::ptrdiff_t>(end)));
  };
  const size_t end = tokens.size();
  if (end < window_read_) return "";  // fewer tokens than before: nothing new
  const std::string released_part = from(window_start_, window_read_);
  const std::string text = from(window_start_, end);
  const size_t ready = finished ? text.size() : complete_utf8_prefix(text);
  const size_t released = std::min(text.size(), released_part.size() + window_released_);
  std::string piece = ready > released ? text.substr(released, ready - released) : "";
  window_released_ += piece.size();
  if (ready == text.size()) {
    // Whole up to the last token: the next window starts where this one's new tokens began.
    window_start_ = window_read_;
    window_read_ = end;
    window_released_ = 0;
  }
  text_ += piece;
  return piece;
}

std::string TextStream::push(const std::vector<int64_t>& tokens) { return advance(tokens, false); }

std::string TextStream::finish(const std::vector<int64_t>& tokens) { return advance(tokens, true); }

}  // namespace lintime::infer
