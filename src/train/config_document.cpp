// TOML → JSON conversion, overrides and the strict field reader.
#include "train/config_document.h"

#include "core/error.h"

#include <toml++/toml.h>

#include <filesystem>
#include <memory>
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

// JSON values into TOML containers (JSON null has no TOML form: such entries are dropped).
toml::table to_toml_table(const nlohmann::json& object);

toml::array to_toml_array(const nlohmann::json& list) {
  toml::array array;
  for (const auto& item : list) {
    switch (item.type()) {
      case nlohmann::json::value_t::object: array.push_back(to_toml_table(item)); break;
      case nlohmann::json::value_t::array: array.push_back(to_toml_array(item)); break;
      case nlohmann::json::value_t::boolean: array.push_back(item.get<bool>()); break;
      case nlohmann::json::value_t::number_integer:
      case nlohmann::json::value_t::number_unsigned: array.push_back(item.get<int64_t>()); break;
      case nlohmann::json::value_t::number_float: array.push_back(item.get<double>()); break;
      case nlohmann::json::value_t::string: array.push_back(item.get<std::string>()); break;
      default: break;
    }
  }
  return array;
}

toml::table to_toml_table(const nlohmann::json& object) {
  toml::table table;
  for (const auto& [key, item] : object.items()) {
    switch (item.type()) {
      case nlohmann::json::value_t::object: table.insert(key, to_toml_table(item)); break;
      case nlohmann::json::value_t::array: table.insert(key, to_toml_array(item)); break;
      case nlohmann::json::value_t::boolean: table.insert(key, item.get<bool>()); break;
      case nlohmann::json::value_t::number_integer:
      case nlohmann::json::value_t::number_unsigned: table.insert(key, item.get<int64_t>()); break;
      case nlohmann::json::value_t::number_float: table.insert(key, item.get<double>()); break;
      case nlohmann::json::value_t::string: table.insert(key, item.get<std::string>()); break;
      default: break;
    }
  }
  return table;
}

}  // namespace

std::string to_toml(const nlohmann::json& document) {
  LINTIME_CHECK(document.is_object(), "to_toml: a config document must be a table, got ", document.type_name());
  std::ostringstream out;
  out << to_toml_table(document) << "\n";
  return out.str();
}

nlohmann::json read_toml_file(const std::string& path) {
  LINTIME_CHECK(!std::filesystem::is_directory(path), "config: '", path, "' is a folder (expected a TOML file)");
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

}  // namespace lintime::train
