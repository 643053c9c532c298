// TOML → JSON conversion, overrides and the strict field reader.
#include "train/config_document.h"

#include "core/error.h"

#include <toml++/toml.h>

#include <sstream>

namespace lintime::train {
namespace {

nlohmann::json to_json(const toml::node& node) {
  if (auto table = node.as_table()) {
    nlohmann::json object = nlohmann::json::object();
    for (const auto& [key, value] : *table) object[std::string(key.str())] = to_json(value);
    return object;
  }
  if (auto array = node.as_array()) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& value : *array) list.push_back(to_json(value));
    return list;
  }
  if (auto value = node.as_integer()) return value->get();
  if (auto value = node.as_floating_point()) return value->get();
  if (auto value = node.as_boolean()) return value->get();
  if (auto value = node.as_string()) return value->get();
  fail("config: dates and times are not supported in lintime configs");
}

std::string type_name(const nlohmann::json& value) {
  if (value.is_number_integer()) return "an integer";
  if (value.is_number_float()) return "a number";
  if (value.is_boolean()) return "a boolean";
  if (value.is_string()) return "a string";
  if (value.is_array()) return "an array";
  if (value.is_object()) return "a table";
  return "null";
}

}  // namespace

nlohmann::json read_toml_file(const std::string& path) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& error) {
    const auto& where = error.source().begin;
    if (error.source().path == nullptr && std::string(error.description()).find("File could not be opened") != std::string::npos)
      fail("config: cannot open '", path, "' (expected a readable TOML file)");
    fail("config: ", path, ":", where.line, ":", where.column, ": ", error.description());
  }
  return to_json(table);
}

void apply_overrides(nlohmann::json& document, const std::vector<std::string>& overrides) {
  for (const auto& override_text : overrides) {
    const auto equals = override_text.find('=');
    LINTIME_CHECK(equals != std::string::npos && equals > 0, "--set: expected key=value, got '",
                  override_text, "'");
    const std::string key = override_text.substr(0, equals);
    std::string value_text = override_text.substr(equals + 1);
    nlohmann::json value;
    try {
      auto parsed = toml::parse("value = " + value_text);
      value = to_json(*parsed.get("value"));
    } catch (const toml::parse_error&) {
      value = value_text;  // a bare word: a string
    }
    nlohmann::json* node = &document;
    std::stringstream parts(key);
    std::string part;
    std::vector<std::string> path;
    while (std::getline(parts, part, '.')) path.push_back(part);
    for (size_t i = 0; i + 1 < path.size(); ++i) {
      LINTIME_CHECK(!path[i].empty(), "--set: malformed key '", key, "'");
      if (!node->contains(path[i])) (*node)[path[i]] = nlohmann::json::object();
      node = &(*node)[path[i]];
      LINTIME_CHECK(node->is_object(), "--set: '", key, "' descends into a value that is not a table");
    }
    (*node)[path.back()] = value;
  }
}

StrictObject::StrictObject(const nlohmann::json& object, std::string path)
    : object_(object), path_(std::move(path)) {
  LINTIME_CHECK(object_.is_object() || object_.is_null(), "config: '", path_,
                "' must be a table, got ", type_name(object_));
}

std::string StrictObject::where(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

const nlohmann::json* StrictObject::find(const std::string& key) {
  read_.insert(key);
  if (!object_.is_object()) return nullptr;
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool StrictObject::has(const std::string& key) const {
  return object_.is_object() && object_.contains(key) && !object_.at(key).is_null();
}

int64_t StrictObject::get_int(const std::string& key, int64_t fallback) {
  const auto* value = find(key);
  if (!value) return fallback;
  if (value->is_number_float() && value->get<double>() == static_cast<double>(static_cast<int64_t>(value->get<double>())))
    return static_cast<int64_t>(value->get<double>());
  LINTIME_CHECK(value->is_number_integer(), "config: '", where(key), "' must be an integer, got ",
                type_name(*value), " (", value->dump(), ")");
  return value->get<int64_t>();
}

int64_t StrictObject::require_int(const std::string& key) {
  LINTIME_CHECK(has(key), "config: '", where(key), "' is required (an integer)");
  return get_int(key, 0);
}

double StrictObject::get_double(const std::string& key, double fallback) {
  const auto* value = find(key);
  if (!value) return fallback;
  LINTIME_CHECK(value->is_number(), "config: '", where(key), "' must be a number, got ",
                type_name(*value), " (", value->dump(), ")");
  return value->get<double>();
}

bool StrictObject::get_bool(const std::string& key, bool fallback) {
  const auto* value = find(key);
  if (!value) return fallback;
  LINTIME_CHECK(value->is_boolean(), "config: '", where(key), "' must be true or false, got ",
                type_name(*value), " (", value->dump(), ")");
  return value->get<bool>();
}

std::string StrictObject::get_string(const std::string& key, const std::string& fallback) {
  const auto* value = find(key);
  if (!value) return fallback;
  LINTIME_CHECK(value->is_string(), "config: '", where(key), "' must be a string, got ",
                type_name(*value), " (", value->dump(), ")");
  return value->get<std::string>();
}

std::vector<double> StrictObject::get_double_list(const std::string& key,
                                                  const std::vector<double>& fallback) {
  const auto* value = find(key);
  if (!value) return fallback;
  if (value->is_number()) return {value->get<double>()};
  LINTIME_CHECK(value->is_array(), "config: '", where(key), "' must be an array of numbers, got ",
                type_name(*value));
  std::vector<double> result;
  for (const auto& item : *value) {
    LINTIME_CHECK(item.is_number(), "config: '", where(key), "' must hold only numbers, got ",
                  type_name(item));
    result.push_back(item.get<double>());
  }
  return result;
}

nlohmann::json StrictObject::get_raw(const std::string& key) {
  const auto* value = find(key);
  return value ? *value : nlohmann::json();
}

void StrictObject::finish(const std::vector<std::string>& known_keys_hint) const {
  if (!object_.is_object()) return;
  for (const auto& [key, value] : object_.items()) {
    if (read_.count(key)) continue;
    std::ostringstream known;
    const auto& names = known_keys_hint.empty() ? std::vector<std::string>(read_.begin(), read_.end())
                                                : known_keys_hint;
    for (size_t i = 0; i < names.size(); ++i) known << (i ? ", " : "") << names[i];
    fail("config: unknown key '", where(key), "' (known keys: ", known.str(), ")");
  }
}

}  // namespace lintime::train
