// Strict reading of every config lintime takes (config.json of the model architectures, the
// training TOML files read as JSON, their --set overrides and the MQAR mixers' option tables),
// with one error style: one line naming the key by its full dotted path, what was expected and
// what was found, e.g.
//   config key "train.lr": expected a number, got string "fast"
//   config key "model.gsa.slots": unknown, expected one of num_heads, num_slots, ...
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lintime::config {

using nlohmann::json;

// A value as shown in errors, cut at 60 characters.
std::string shown(const json& value);
// "a, b, c"
std::string join(const std::vector<std::string>& names);

// Throws: config key "<key>": expected <expected>, got <type> <value>.
[[noreturn]] void wrong_type(const std::string& key, const char* expected, const json& value);
// Throws: config key "<key>": <problem>.
[[noreturn]] void bad_value(const std::string& key, const std::string& problem);

// One value of a config under its full key. Integers may be written as whole floats (1e3).
int64_t read_integer(const std::string& key, const json& value);
double read_number(const std::string& key, const json& value);
bool read_bool(const std::string& key, const json& value);
std::string read_string(const std::string& key, const json& value);
// The same, with null read as "not set".
std::optional<int64_t> read_optional_integer(const std::string& key, const json& value);
std::optional<double> read_optional_number(const std::string& key, const json& value);
std::optional<bool> read_optional_bool(const std::string& key, const json& value);
std::optional<std::string> read_optional_string(const std::string& key, const json& value);

template <typename T>
json optional_json(const std::optional<T>& value) {
  return value.has_value() ? json(*value) : json(nullptr);
}

// Bounds on a model's sizes, so that every count derived from them (parameters, bytes of
// weights and states) fits int64 and an absurd config is refused before anything is allocated:
// widths (hidden, intermediate, heads' dims) up to 2^20, vocabularies up to 2^24, layers up to
// 4,096, heads and memory slots up to 2^16, kernel sizes up to 1,024.
namespace size_limits {
constexpr int64_t kWidth = int64_t{1} << 20;
constexpr int64_t kVocabulary = int64_t{1} << 24;
constexpr int64_t kLayers = 4096;
constexpr int64_t kHeads = int64_t{1} << 16;
constexpr int64_t kKernel = 1024;
}  // namespace size_limits

// Throws lintime::Error "config key "KEY": expected a positive value of at most MAX, got VALUE".
void check_size(const std::string& key, int64_t value, int64_t max);

// The fields of one JSON object (a TOML table) read by name: get() with a fallback for absent
// or null keys, require() for keys that must be there; finish() rejects keys never read, and
// the constructor with `known` rejects the others up front.
class StrictObject {
 public:
  // `path`: the object's dotted place in its document ("train", "model.gsa"; "" at the top).
  // `object` must be an object or null (null reads as empty).
  StrictObject(const json& object, std::string path);
  StrictObject(const json& object, std::string path, const std::vector<std::string>& known);

  int64_t get(const std::string& key, int64_t fallback);
  double get(const std::string& key, double fallback);
  bool get(const std::string& key, bool fallback);
  std::string get(const std::string& key, const std::string& fallback);
  std::string get(const std::string& key, const char* fallback) { return get(key, std::string(fallback)); }
  // The same with the type named: get_as<int64_t>("num_heads", 4).
  template <typename T>
  T get_as(const std::string& key, const T& fallback) {
    return get(key, fallback);
  }
  // A number or an array of numbers.
  std::vector<double> get_number_list(const std::string& key, const std::vector<double>& fallback);
  int64_t require_integer(const std::string& key);
  // The raw value (null when absent), marked read.
  json get_raw(const std::string& key);
  bool has(const std::string& key) const;
  // Throws for the first key never read, listing `known`.
  void finish(const std::vector<std::string>& known) const;
  // The full dotted key of `key` in this object.
  std::string key_path(const std::string& key) const;

 private:
  const json* find(const std::string& key);

  json object_;
  std::string path_;
  std::set<std::string> read_;
};

// The JSON document in a file; `what` names it in errors ("GSA config file").
json read_json_file(const std::string& path, const char* what);

// A config parsed by `parse` (a from_json) from a file; errors are prefixed with the path.
template <class Parse>
auto load_json_config(const std::string& path, const char* what, Parse parse);

// Writes the document to <path>.tmp, then renames it over path: a reader never sees half a file.
void write_json_file_atomically(const std::string& path, const json& document);

}  // namespace lintime::config

#include "core/error.h"

namespace lintime::config {

template <class Parse>
auto load_json_config(const std::string& path, const char* what, Parse parse) {
  const json parsed = read_json_file(path, what);
  try {
    return parse(parsed);
  } catch (const Error& error) {
    fail(path, ": ", error.what());
  }
}

}  // namespace lintime::config
