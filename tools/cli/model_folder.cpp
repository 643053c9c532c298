#include "tools/cli/model_folder.h"

#include "core/error.h"
#include "io/gsa_checkpoint.h"

#include <ATen/Context.h>
#include <nlohmann/json.hpp>

#include <fstream>

namespace lintime::cli {

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  fail("--dtype must be float32, bfloat16 or float16, got '", name, "'");
}

std::unique_ptr<models::GsaModel> load_causal_lm(const std::string& model_dir, at::ScalarType dtype,
                                                 const c10::Device& device) {
  const std::string config_path = model_dir + "/config.json";
  std::ifstream in(config_path);
  LINTIME_CHECK(in, "model folder '", model_dir, "': no config.json");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& error) {
    fail("'", config_path, "' is not valid JSON: ", error.what());
  }
  const std::string type = config.is_object() ? config.value("model_type", std::string()) : std::string();
  LINTIME_CHECK(type == "gsa", "'", config_path, "': model_type \"", type,
                "\" cannot be run yet (supported: \"gsa\", fla's GSAForCausalLM)");
  return io::load_gsa_model(model_dir, dtype, device);
}

}  // namespace lintime::cli
