#include "models/architecture.h"

#include "core/error.h"
#include "io/model_folder.h"

namespace lintime::models {

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> entries = {
      gsa_architecture(),
      llama_architecture(),
      based_architecture(),
  };
  return entries;
}

const Architecture& architecture_of(const nlohmann::json& config, const std::string& where) {
  for (const Architecture& architecture : architectures()) {
    if (architecture.detects(config)) return architecture;
  }
  std::string supported;
  for (const Architecture& architecture : architectures()) {
    supported += (supported.empty() ? "" : "; ") + std::string(architecture.what);
  }
  const nlohmann::json model_type = config.is_object() ? config.value("model_type", nlohmann::json()) : nlohmann::json();
  fail("'", where, "': model_type ", model_type.is_null() ? std::string("(none)") : model_type.dump(),
       " cannot be run yet (supported: ", supported, ")");
}

std::unique_ptr<CausalLm> load_causal_lm(const std::string& model_dir, at::ScalarType dtype, const c10::Device& device) {
  const nlohmann::json config = io::read_model_config(model_dir);
  return architecture_of(config, model_dir + "/config.json").load(model_dir, dtype, device);
}

}  // namespace lintime::models
