#include "core/config_reader.h"

#include "core/error.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace lintime::config {

std::string shown(const json& value) {
  std::string text = value.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

std::string join(const std::vector<std::string>& names) {
  std::ostringstream out;
  for (size_t i = 0; i < names.size(); ++i) out << (i ? ", " : "") << names[i];
  return out.str();
}

void wrong_type(const std::string& key, const char* expected, const json& value) {
  fail("config key \"", key, "\": expected ", expected, ", got ", value.type_name(), " ", shown(value));
}

void bad_value(const std::string& key, const std::string& problem) { fail("config key \"", key, "\": ", problem); }

int64_t read_integer(const std::string& key, const json& value) {
  if (value.is_number_float()) {
    const double number = value.get<double>();
    if (std::isfinite(number) && number == std::floor(number) && std::fabs(number) < 9.0e15) {
      return static_cast<int64_t>(number);
    }
  }
  if (!value.is_number_integer()) wrong_type(key, "an integer", value);
  // 2^63 and above arrive as unsigned: read as int64 they would wrap to a negative size.
  LINTIME_CHECK(!value.is_number_unsigned() || value.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX), "config key \"",
                key, "\": expected an integer below 2^63, got ", value.dump());
  return value.get<int64_t>();
}

double read_number(const std::string& key, const json& value) {
  if (!value.is_number()) wrong_type(key, "a number", value);
  return value.get<double>();
}

bool read_bool(const std::string& key, const json& value) {
  if (!value.is_boolean()) wrong_type(key, "a boolean (true or false)", value);
  return value.get<bool>();
}

std::string read_string(const std::string& key, const json& value) {
  if (!value.is_string()) wrong_type(key, "a string", value);
  return value.get<std::string>();
}

std::optional<int64_t> read_optional_integer(const std::string& key, const json& value) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_number()) wrong_type(key, "an integer or null", value);
  return read_integer(key, value);
}

std::optional<double> read_optional_number(const std::string& key, const json& value) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_number()) wrong_type(key, "a number or null", value);
  return value.get<double>();
}

std::optional<bool> read_optional_bool(const std::string& key, const json& value) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_boolean()) wrong_type(key, "a boolean or null", value);
  return value.get<bool>();
}

std::optional<std::string> read_optional_string(const std::string& key, const json& value) {
  if (value.is_null()) return std::nullopt;
  if (!value.is_string()) wrong_type(key, "a string or null", value);
  return value.get<std::string>();
}

StrictObject::StrictObject(const json& object, std::string path) : object_(object), path_(std::move(path)) {
  if (!object_.is_object() && !object_.is_null()) wrong_type(path_, "an object (a table)", object_);
}

StrictObject::StrictObject(const json& object, std::string path, const std::vector<std::string>& known)
    : StrictObject(object, std::move(path)) {
  if (!object_.is_object()) return;
  for (const auto& [key, value] : object_.items()) {
    bool listed = false;
    for (const auto& name : known) listed = listed || name == key;
    if (!listed) bad_value(key_path(key), "unknown, expected one of " + join(known));
  }
}

std::string StrictObject::key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

const json* StrictObject::find(const std::string& key) {
  read_.insert(key);
  if (!object_.is_object()) return nullptr;
  const auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool StrictObject::has(const std::string& key) const {
  return object_.is_object() && object_.contains(key) && !object_.at(key).is_null();
}

int64_t StrictObject::get(const std::string& key, int64_t fallback) {
  const json* value = find(key);
  return value ? read_integer(key_path(key), *value) : fallback;
}

double StrictObject::get(const std::string& key, double fallback) {
  const json* value = find(key);
  return value ? read_number(key_path(key), *value) : fallback;
}

bool StrictObject::get(const std::string& key, bool fallback) {
  const json* value = find(key);
  return value ? read_bool(key_path(key), *value) : fallback;
}

std::string StrictObject::get(const std::string& key, const std::string& fallback) {
  const json* value = find(key);
  return value ? read_string(key_path(key), *value) : fallback;
}

std::vector<double> StrictObject::get_number_list(const std::string& key, const std::vector<double>& fallback) {
  const json* value = find(key);
  if (!value) return fallback;
  if (value->is_number()) return {value->get<double>()};
  if (!value->is_array()) wrong_type(key_path(key), "a number or an array of numbers", *value);
  std::vector<double> result;
  for (const auto& item : *value) result.push_back(read_number(key_path(key) + "[]", item));
  return result;
}

int64_t StrictObject::require_integer(const std::string& key) {
  if (!has(key)) bad_value(key_path(key), "missing, expected an integer");
  return get(key, int64_t{0});
}

json StrictObject::get_raw(const std::string& key) {
  const json* value = find(key);
  return value ? *value : json();
}

void StrictObject::finish(const std::vector<std::string>& known) const {
  if (!object_.is_object()) return;
  for (const auto& [key, value] : object_.items()) {
    if (!read_.count(key)) bad_value(key_path(key), "unknown, expected one of " + join(known));
  }
}

json read_json_file(const std::string& path, const char* what) {
  LINTIME_CHECK(!std::filesystem::is_directory(path), path, ": a folder, not the ", what);
  std::ifstream file(path);
  LINTIME_CHECK(file.good(), path, ": cannot open the ", what);
  try {
    return json::parse(file);
  } catch (const json::exception& error) {
    fail(path, ": not valid JSON (", error.what(), ")");
  }
}

void write_json_file_atomically(const std::string& path, const json& document) {
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

void check_size(const std::string& key, int64_t value, int64_t max) {
  LINTIME_CHECK(value > 0 && value <= max, "config key \"", key, "\": expected a positive value of at most ", max,
                ", got ", value);
}

}  // namespace lintime::config
