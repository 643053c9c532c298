// lintime's error type and check macro for everything that is not an op (configs, data,
// checkpoints, CLI). Messages are one line naming what is wrong and what was expected.
// Ops use TORCH_CHECK so that Python callers get the usual RuntimeError.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lintime {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

// Text from a file shown in a message: bytes other than printable ASCII as \xNN, cut after
// `limit` bytes, so that a binary file's bytes never reach the terminal or span lines.
inline std::string excerpt(const std::string& text, size_t limit = 40) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < text.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

// Line breaks inside a message (from a parser's description, a file's name or contents) are
// shown as \n, so that every message stays one line.
inline std::string one_line(std::string text) {
  for (size_t at = text.find_first_of("\r\n"); at != std::string::npos; at = text.find_first_of("\r\n", at + 2)) {
    text.replace(at, 1, text[at] == '\n' ? "\\n" : "\\r");
  }
  return text;
}

template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(one_line(detail::concat(parts...)));
}

}  // namespace lintime

#define LINTIME_CHECK(condition, ...)                   \
  do {                                                  \
    if (!(condition)) ::lintime::fail(__VA_ARGS__);     \
  } while (false)
