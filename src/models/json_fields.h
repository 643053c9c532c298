// Reading typed fields of a JSON config (config.json of the model architectures): each reader
// throws lintime::Error with one line naming the key, what was expected and what it got.
#pragma once

#include "core/error.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lintime::models::json_fields {

using nlohmann::json;

// A value as shown in errors, cut at 60 characters.
inline std::string shown(const json& value) {
  std::string text = value.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

[[noreturn]] inline void wrong_type(const std::string& key, const char* expected, const json& value) {
  fail("config key \"", key, "\": expected ", expected, ", got ", value.type_name(), " ", shown(value));
}

inline int64_t read_integer(const std::string& key, const json& value) {
  if (!value.is_number_integer()) wrong_type(key, "an integer", value);
  return value.get<int64_t>();
}
inline std::optional<int64_t> read_optional_integer(const std::string& key, const json& value) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_number_integer()) wrong_type(key, "an integer or null", value);
  return value.get<int64_t>();
}
inline double read_number(const std::string& key, const json& value) {
  if (!value.is_number()) wrong_type(key, "a number", value);
  return value.get<double>();
}
inline std::optional<double> read_optional_number(const std::string& key, const json& value) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_number()) wrong_type(key, "a number or null", value);
  return value.get<double>();
}
inline bool read_bool(const std::string& key, const json& value) {
  if (!value.is_boolean()) wrong_type(key, "a boolean (true or false)", value);
  return value.get<bool>();
}
inline std::optional<bool> read_optional_bool(const std::string& key, const json& value) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_boolean()) wrong_type(key, "a boolean or null", value);
  return value.get<bool>();
}
inline std::string read_string(const std::string& key, const json& value) {
  if (!value.is_string()) wrong_type(key, "a string", value);
  return value.get<std::string>();
}
inline std::optional<std::string> read_optional_string(const std::string& key, const json& value) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_string()) wrong_type(key, "a string or null", value);
  return value.get<std::string>();
}

template <typename T>
json optional_json(const std::optional<T>& value) {
  return value.has_value() ? json(*value) : json(nullptr);
}

// The bookkeeping keys Hugging Face writes into every config.json: kept as written, no effect
// on the model.
struct HubFields {
  explicit HubFields(std::vector<std::string> default_architectures = {})
      : architectures(std::move(default_architectures)) {}

  std::vector<std::string> architectures;
  std::optional<std::string> torch_dtype;  // "torch_dtype" (transformers 4) or "dtype" (5)
  std::optional<std::string> transformers_version;
  std::optional<std::string> name_or_path;  // "_name_or_path"

  // Reads `key` when it is one of these keys (false when it is not).
  bool read(const std::string& key, const json& value) {
    if (key == "architectures") {
      if (!value.is_array()) wrong_type(key, "an array of strings", value);
      architectures.clear();
      for (const auto& item : value) architectures.push_back(read_string(key, item));
    } else if (key == "torch_dtype" || key == "dtype") {
      torch_dtype = read_optional_string(key, value);
    } else if (key == "transformers_version") {
      transformers_version = read_optional_string(key, value);
    } else if (key == "_name_or_path") {
      name_or_path = read_optional_string(key, value);
    } else {
      return false;
    }
    return true;
  }
  // architectures always, the others when set.
  void write(json& out) const {
    out["architectures"] = architectures;
    if (torch_dtype) out["torch_dtype"] = *torch_dtype;
    if (transformers_version) out["transformers_version"] = *transformers_version;
    if (name_or_path) out["_name_or_path"] = *name_or_path;
  }
};

// The JSON document in a file; `what` names it in errors ("GSA config file").
inline json read_json_file(const std::string& path, const char* what) {
  std::ifstream file(path);
  LINTIME_CHECK(file.good(), path, ": cannot open the ", what);
  try {
    return json::parse(file);
  } catch (const json::parse_error& error) {
    fail(path, ": not valid JSON (", error.what(), ")");
  }
}


// A config parsed by `parse` (a from_json) from a file; errors are prefixed with the path.
template <class Parse>
auto load_json_config(const std::string& path, const char* what, Parse parse) {
  const json parsed = read_json_file(path, what);
  try {
    return parse(parsed);
  } catch (const Error& error) {
    fail(path, ": ", error.what());
  }
}

// Writes the document to <path>.tmp, then renames it over path: a reader never sees half a file.
inline void write_json_file_atomically(const std::string& path, const json& document) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream file(temporary, std::ios::trunc);
    LINTIME_CHECK(file.good(), temporary, ": cannot open for writing");
    file << document.dump(2) << "\n";
    file.flush();
    LINTIME_CHECK(file.good(), temporary, ": write failed");
  }
  // std::rename, not std::filesystem: libtorch.so exports its own std::filesystem symbols,
  // some of which crash when they win symbol resolution (seen with remove_all).
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temporary.c_str());
    fail(path, ": cannot rename ", temporary, " over it (", reason, ")");
  }
}

}  // namespace lintime::models::json_fields
