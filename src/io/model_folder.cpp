#include "io/model_folder.h"

#include "core/config_reader.h"
#include "core/error.h"
#include "core/paths.h"
#include "io/safetensors.h"

#include <fstream>
#include <sys/stat.h>

namespace lintime::io {

nlohmann::json read_model_config(const std::string& model_dir) {
  if (const std::string problem = model_folder_problem(model_dir); !problem.empty()) fail(problem);
  const std::string config_path = model_dir + "/config.json";
  std::ifstream in(config_path);
  LINTIME_CHECK(in, "model folder '", model_dir, "': no config.json");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& error) {
    fail("'", config_path, "' is not valid JSON: ", error.what());
  }
  LINTIME_CHECK(config.is_object(), "'", config_path, "' must hold a JSON object");
  return config;
}

void save_model_folder(const std::vector<std::pair<std::string, at::Tensor>>& tensors, const nlohmann::json& config,
                       const std::string& model_dir) {
  struct stat dir_stat {};
  if (::stat(model_dir.c_str(), &dir_stat) != 0) {
    LINTIME_CHECK(::mkdir(model_dir.c_str(), 0755) == 0, "cannot create model folder '", model_dir, "'");
  }
  save_safetensors(model_dir + "/model.safetensors", tensors, {{"format", "pt"}});
  config::write_json_file_atomically(model_dir + "/config.json", config);
}

}  // namespace lintime::io
