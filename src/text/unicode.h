// UTF-8 decoding/encoding and the Unicode classes GPT-2's pre-tokenizer pattern uses (\p{L},
// \p{N}, \s), from tables generated out of the Unicode database (unicode_categories_table.inc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lintime::text {

// Code points of valid UTF-8 text. Throws lintime::Error naming the byte offset of the first
// malformed sequence (overlong forms, surrogates and values above U+10FFFF are malformed).
std::vector<char32_t> decode_utf8(std::string_view text);
// Appends the UTF-8 form of one code point.
void append_utf8(std::string& out, char32_t code_point);

bool is_letter(char32_t code_point);       // general category L*
bool is_number(char32_t code_point);       // general category N*
bool is_white_space(char32_t code_point);  // the White_Space property

}  // namespace lintime::text
