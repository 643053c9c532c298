// Training configs: TOML files read into a JSON document (one tree for files, --set overrides
// and checkpoints), read field by field with core/config_reader.h.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace lintime::train {

// Parses a TOML file into JSON. Throws lintime::Error naming the file, line and problem.
nlohmann::json read_toml_file(const std::string& path);

// Applies "dotted.key=value" overrides; the value is parsed as a TOML value (numbers, booleans,
// strings with or without quotes, arrays). Intermediate tables are created as needed.
void apply_overrides(nlohmann::json& document, const std::vector<std::string>& overrides);

// The document as TOML text that read_toml_file reads back to the same document (tables,
// arrays of tables, arrays, integers, floats, booleans, strings; null values are left out).
std::string to_toml(const nlohmann::json& document);

}  // namespace lintime::train
