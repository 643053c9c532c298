#include "text/unicode.h"

#include "core/error.h"

#include <algorithm>
#include <iterator>

namespace lintime::text {
namespace {

struct CodePointRange {
  char32_t first, last;
};

#include "text/unicode_categories_table.inc"

template <size_t N>
bool in_ranges(const CodePointRange (&ranges)[N], char32_t code_point) {
  const auto* end = std::end(ranges);
  const auto* it = std::upper_bound(std::begin(ranges), end, code_point,
                                    [](char32_t value, const CodePointRange& range) { return value < range.first; });
  return it != std::begin(ranges) && code_point <= std::prev(it)->last;
}

}  // namespace

std::vector<char32_t> decode_utf8(std::string_view text) {
  std::vector<char32_t> result;
  result.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    int length = 0;
    char32_t code_point = 0, minimum = 0;
    if (lead < 0x80) {
      length = 1, code_point = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      length = 2, code_point = lead & 0x1F, minimum = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3, code_point = lead & 0x0F, minimum = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4, code_point = lead & 0x07, minimum = 0x10000;
    }
    bool valid = length > 0 && i + length <= text.size();
    for (int k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xC0) == 0x80;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    valid = valid && code_point >= minimum && code_point <= 0x10FFFF && !(code_point >= 0xD800 && code_point <= 0xDFFF);
    LINTIME_CHECK(valid, "text is not valid UTF-8: malformed sequence at byte ", i);
    result.push_back(code_point);
    i += length;
  }
  return result;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

bool is_letter(char32_t code_point) { return in_ranges(kLetterRanges, code_point); }
bool is_number(char32_t code_point) { return in_ranges(kNumberRanges, code_point); }
bool is_white_space(char32_t code_point) { return in_ranges(kWhiteSpaceRanges, code_point); }

}  // namespace lintime::text
