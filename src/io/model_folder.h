// Model folders as files (Hugging Face's layout): config.json beside model.safetensors (or the
// sharded or pickled forms ModelWeights reads). Format only: which architecture a folder holds
// and how its weights map to a model is the architecture registry's business
// (models/architecture.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace lintime::io {

// MODEL_DIR/config.json as a JSON object. Throws lintime::Error naming the folder or the file
// when the folder or the file is missing, the file is not JSON, or it holds no object.
nlohmann::json read_model_config(const std::string& model_dir);

// Writes config.json and model.safetensors (the tensors' dtypes) into model_dir, creating it;
// each file is written atomically.
void save_model_folder(const std::vector<std::pair<std::string, at::Tensor>>& tensors, const nlohmann::json& config,
                       const std::string& model_dir);

}  // namespace lintime::io
