// Integer flags checked on their text, before CLI11 converts them (its conversion clamps a value
// beyond the type's range, so 99999999999999999999 became a seed silently): digits only, within
// [min, max], or one line naming the flag, the value and the range (issue 25).
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

namespace lintime::cli {

inline CLI::Validator integer_in(__int128 min, __int128 max) {
  auto describe = [](__int128 value) {
    if (value == static_cast<__int128>(std::numeric_limits<uint64_t>::max())) return std::string("2^64 - 1");
    const bool negative = value < 0;
    unsigned __int128 magnitude = negative ? static_cast<unsigned __int128>(-value) : static_cast<unsigned __int128>(value);
    std::string digits;
    do {
      digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(magnitude % 10)));
      magnitude /= 10;
    } while (magnitude > 0);
    return (negative ? "-" : "") + digits;
  };
  const std::string range = "an integer in [" + describe(min) + ", " + describe(max) + "]";
  return CLI::Validator(
      [min, max, range](std::string& text) -> std::string {
        size_t at = text.size() > 1 && text[0] == '-' ? 1 : 0;
        if (at == text.size()) return "expected " + range + ", got '" + text + "'";
        __int128 value = 0;
        for (size_t i = at; i < text.size(); ++i) {
          if (text[i] < '0' || text[i] > '9') return "expected " + range + ", got '" + text + "'";
          value = value * 10 + (text[i] - '0');
          if (value > max + 1 && value > -min + 1) return "expected " + range + ", got '" + text + "'";
        }
        if (at == 1) value = -value;
        if (value < min || value > max) return "expected " + range + ", got '" + text + "'";
        return std::string();
      },
      range);
}

// A positive finite real number (CLI11's PositiveNumber names its range as 0 to 1.8e308 in
// full digits).
inline CLI::Validator positive_real() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = text.empty() ? 0.0 : std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value) || value <= 0)
          return "expected a positive number, got '" + text + "'";
        return std::string();
      },
      "a positive number");
}

// A real number written out in full and finite ("" or "0.5x" would read as 0 or 0.5); the
// command checks its range.
inline CLI::Validator finite_real() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = text.empty() ? 0.0 : std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value))
          return "expected a finite number, got '" + text + "'";
        return std::string();
      },
      "a number");
}

// A path or name that is not empty (an empty --out would fall back to the default folder).
inline CLI::Validator non_empty() {
  return CLI::Validator(
      [](std::string& text) -> std::string { return text.empty() ? "expected a non-empty value, got ''" : std::string(); },
      "non-empty");
}

// A boolean flag's value: true or false (CLI11 alone reads "2" as true and "" as false).
inline CLI::Validator boolean_text() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text == "true" || text == "false") return std::string();
        return "expected true or false, got '" + text + "'";
      },
      "true or false");
}

// Common bounds.
constexpr __int128 kAnySeed = std::numeric_limits<uint64_t>::max();
constexpr int64_t kMaxTokens = int64_t{1} << 24;   // tokens of a prompt, a generation, a sequence
constexpr int64_t kMaxBatch = int64_t{1} << 20;    // sequences of one batch
constexpr int64_t kMaxThreads = 1024;
// Sequences, or queued requests, one server holds: each may hold an HTTP worker thread.
constexpr int64_t kMaxServedRequests = 4096;

}  // namespace lintime::cli
