#include "models/architecture.h"

#include "core/error.h"
#include "io/model_folder.h"
#include "io/model_weights.h"

namespace lintime::models {

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> entries = {
      gsa_architecture(),
      gla_architecture(),
      llama_architecture(),
      based_architecture(),
  };
  return entries;
}

std::string model_type_of(const nlohmann::json& config) {
  if (!config.is_object()) return "";
  const auto found = config.find("model_type");
  return found != config.end() && found->is_string() ? found->get<std::string>() : "";
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
  const std::string config_path = model_dir + "/config.json";
  const Architecture& architecture = architecture_of(config, config_path);
  std::unique_ptr<CausalLm> model;
  try {
    model = architecture.create(config, dtype, device);
  } catch (const Error& error) {
    fail(config_path, ": ", error.what());
  }
  const io::ModelWeights weights(model_dir);
  const io::WeightTable table =
      architecture.weight_table ? architecture.weight_table(config, weights)
                                : [](const std::string& name, const at::Tensor&) { return io::WeightSource{name}; };
  io::load_module_weights(model->module(), weights, table);
  model->module().to(device, dtype);  // as after any move: modules re-derive what they keep beside the weights
  model->set_config_json(config);
  return model;
}

std::unique_ptr<CausalLm> build_causal_lm(const nlohmann::json& config, uint64_t seed, const std::string& where) {
  const Architecture& architecture = architecture_of(config, where);
  std::unique_ptr<CausalLm> model;
  try {
    model = architecture.build(config, seed);
  } catch (const Error& error) {
    fail(where, ": ", error.what());
  }
  model->set_config_json(config);
  return model;
}

void save_causal_lm(CausalLm& model, const std::string& model_dir) {
  LINTIME_CHECK(model.config_json().is_object(), "save: the model ", model.name(),
                " was built without a config.json, expected one (load or build it from a config)");
  io::save_model_folder(model.module().named_parameters(), model.config_json(), model_dir);
}

}  // namespace lintime::models
