// The bookkeeping keys Hugging Face writes into every config.json (architectures, dtype,
// transformers version, name or path): read with the shared config reader, kept as written.
#pragma once

#include "core/config_reader.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lintime::models {

// They have no effect on the model.
struct HubFields {
  explicit HubFields(std::vector<std::string> default_architectures = {})
      : architectures(std::move(default_architectures)) {}

  std::vector<std::string> architectures;
  std::optional<std::string> torch_dtype;  // "torch_dtype" (transformers 4) or "dtype" (5)
  std::optional<std::string> transformers_version;
  std::optional<std::string> name_or_path;  // "_name_or_path"

  // Reads `key` when it is one of these keys (false when it is not).
  bool read(const std::string& key, const nlohmann::json& value) {
    if (key == "architectures") {
      if (!value.is_array()) config::wrong_type(key, "an array of strings", value);
      architectures.clear();
      for (const auto& item : value) architectures.push_back(config::read_string(key, item));
    } else if (key == "torch_dtype" || key == "dtype") {
      torch_dtype = config::read_optional_string(key, value);
    } else if (key == "transformers_version") {
      transformers_version = config::read_optional_string(key, value);
    } else if (key == "_name_or_path") {
      name_or_path = config::read_optional_string(key, value);
    } else {
      return false;
    }
    return true;
  }
  // architectures always, the others when set.
  void write(nlohmann::json& out) const {
    out["architectures"] = architectures;
    if (torch_dtype) out["torch_dtype"] = *torch_dtype;
    if (transformers_version) out["transformers_version"] = *transformers_version;
    if (name_or_path) out["_name_or_path"] = *name_or_path;
  }
};

}  // namespace lintime::models
