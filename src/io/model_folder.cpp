#include "io/model_folder.h"

#include "core/error.h"
#include "io/gsa_checkpoint.h"
#include "io/model_weights.h"
#include "models/based_config.h"
#include "models/llama_config.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sys/stat.h>

namespace lintime::io {

std::unique_ptr<models::CausalLm> load_causal_lm(const std::string& model_dir, at::ScalarType dtype,
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
  LINTIME_CHECK(config.is_object(), "'", config_path, "' must hold a JSON object");
  if (config.value("model_type", std::string()) == "gsa") return models::as_causal_lm(load_gsa_model(model_dir, dtype, device));
  const std::string model_type = config.value("model_type", std::string());
  if (model_type == "llama" || model_type == "mistral") return models::as_causal_lm(load_llama_model(model_dir, dtype, device));
  if (config.contains("alt_mixer") || config.contains("alt_mixer_layers")) {
    const models::BasedConfig based = models::BasedConfig::load(config_path);
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
    std::unique_ptr<models::BasedModel> model;
    {  // allocated in place, not drawn: every parameter is loaded below
      layers::WeightsToBeLoaded scope(at::TensorOptions().dtype(dtype).device(device));
      model = std::make_unique<models::BasedModel>(based, generator);
    }
    // lintime's BASED parameters carry HazyResearch's names ("transformer.…", "lm_head.weight").
    load_module_weights(*model, ModelWeights(model_dir),
                        [](const std::string& name, const at::Tensor&) { return WeightSource{name}; });
    model->to(device, dtype);
    return models::as_causal_lm(std::move(model));
  }
  fail("'", config_path, "': model_type \"", config.value("model_type", std::string()),
       "\" cannot be run yet (supported: \"gsa\", fla's GSAForCausalLM; \"llama\" and \"mistral\", Hugging ",
       "Face's; and HazyResearch's BASED configs)");
}

std::unique_ptr<models::LlamaModel> load_llama_model(const std::string& model_dir, at::ScalarType dtype,
                                                     const c10::Device& device) {
  const models::LlamaConfig llama = models::LlamaConfig::load(model_dir + "/config.json");
  const ModelWeights weights(model_dir);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
  std::unique_ptr<models::LlamaModel> model;
  {  // allocated in place, not drawn: every parameter is loaded below
    layers::WeightsToBeLoaded scope(at::TensorOptions().dtype(dtype).device(device));
    model = std::make_unique<models::LlamaModel>(llama, generator);
  }
  // lintime's Llama parameters carry Hugging Face's names.
  load_module_weights(*model, weights, [](const std::string& name, const at::Tensor&) { return WeightSource{name}; });
  model->to(device, dtype);
  return model;
}

void save_llama_model(const models::LlamaModel& model, const std::string& model_dir) {
  struct stat dir_stat {};  // POSIX: libtorch exports its own std::filesystem (see checkpoint.cpp)
  if (::stat(model_dir.c_str(), &dir_stat) != 0) {
    LINTIME_CHECK(::mkdir(model_dir.c_str(), 0755) == 0, "cannot create model folder '", model_dir, "'");
  }
  save_safetensors(model_dir + "/model.safetensors", model.named_parameters(), {{"format", "pt"}});
  model.config().save(model_dir + "/config.json");
}

}  // namespace lintime::io
