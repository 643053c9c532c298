// Training configs: TOML files read into a JSON document (one tree for files, --set overrides
// and checkpoints), and a strict field reader that rejects unknown keys and wrong types with
// one line naming the key and what was expected.
#pragma once

#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

namespace lintime::train {

// Parses a TOML file into JSON. Throws lintime::Error naming the file, line and problem.
nlohmann::json read_toml_file(const std::string& path);

// Applies "dotted.key=value" overrides; the value is parsed as a TOML value (numbers, booleans,
// strings with or without quotes, arrays). Intermediate tables are created as needed.
void apply_overrides(nlohmann::json& document, const std::vector<std::string>& overrides);

// Reads the fields of one JSON object by name, checking types; finish() rejects unread keys.
class StrictObject {
 public:
  StrictObject(const nlohmann::json& object, std::string path);

  int64_t get_int(const std::string& key, int64_t fallback);
  int64_t require_int(const std::string& key);
  double get_double(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_string(const std::string& key, const std::string& fallback);
  std::vector<double> get_double_list(const std::string& key, const std::vector<double>& fallback);
  // Returns the raw value (null when absent) and marks it read.
  nlohmann::json get_raw(const std::string& key);
  bool has(const std::string& key) const;
  // Throws for any key never read: "config: unknown key 'train.lrr' (known keys: ...)".
  void finish(const std::vector<std::string>& known_keys_hint = {}) const;

  const std::string& path() const { return path_; }

 private:
  const nlohmann::json* find(const std::string& key);
  std::string where(const std::string& key) const;

  nlohmann::json object_;
  std::string path_;
  std::set<std::string> read_;
};

}  // namespace lintime::train
