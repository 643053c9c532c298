#include "io/gsa_checkpoint.h"

#include "core/error.h"
#include "io/model_weights.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <regex>
#include <sys/stat.h>

namespace lintime::io {
namespace {

// "model.layers.<i>.<rest>" -> (i, rest); false for other names.
bool split_layer_name(const std::string& name, std::string& layer, std::string& rest) {
  static const std::regex pattern(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch match;
  if (!std::regex_match(name, match, pattern)) return false;
  layer = match[1];
  rest = match[2];
  return true;
}

}  // namespace

GsaLayout detect_gsa_layout(const std::vector<std::string>& tensor_names) {
  std::string layer, rest;
  for (const std::string& name : tensor_names) {
    if (split_layer_name(name, layer, rest) && (rest == "attn.norm.weight" || rest == "mlp.norm.weight"))
      return GsaLayout::legacy;
  }
  return GsaLayout::current;
}

WeightSource gsa_weight_source(const std::string& name, GsaLayout layout, int64_t intermediate_size) {
  std::string layer, rest;
  if (layout == GsaLayout::current || !split_layer_name(name, layer, rest)) return {name};
  const std::string prefix = "model.layers." + layer + ".";
  if (rest == "attn_norm.weight") return {prefix + "attn.norm.weight"};
  if (rest == "mlp_norm.weight") return {prefix + "mlp.norm.weight"};
  if (rest == "mlp.gate_proj.weight") return {prefix + "mlp.gate_proj.weight", 2 * intermediate_size, 0};
  if (rest == "mlp.up_proj.weight") return {prefix + "mlp.gate_proj.weight", 2 * intermediate_size, intermediate_size};
  return {name};
}

std::unique_ptr<models::GsaModel> load_gsa_model(const std::string& model_dir, at::ScalarType dtype, c10::Device device) {
  struct stat dir_stat {};  // POSIX stat: libtorch's std::filesystem copies (see checkpoint.cpp)
  LINTIME_CHECK(::stat(model_dir.c_str(), &dir_stat) == 0 && S_ISDIR(dir_stat.st_mode), "model folder '", model_dir,
                "' does not exist");
  const models::GsaConfig config = models::GsaConfig::load(model_dir + "/config.json");
  LINTIME_CHECK(!config.has_hybrid_attention(), "'", model_dir,
                "/config.json' lists hybrid softmax-attention layers (\"attn\"), which lintime's GSA model does not have");
  const ModelWeights weights(model_dir);
  const GsaLayout layout = detect_gsa_layout(weights.names());
  const int64_t intermediate = config.resolved_intermediate_size();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(0);
  std::unique_ptr<models::GsaModel> model;
  {  // allocated in place, not drawn: every parameter is loaded below
    layers::WeightsToBeLoaded scope(at::TensorOptions().dtype(dtype).device(device));
    model = std::make_unique<models::GsaModel>(config, generator);
  }
  load_module_weights(*model, weights, [&](const std::string& name, const at::Tensor&) {
    return gsa_weight_source(name, layout, intermediate);
  });
  model->to(device, dtype);
  return model;
}

void save_gsa_model(const models::GsaModel& model, const std::string& model_dir) {
  struct stat dir_stat {};
  if (::stat(model_dir.c_str(), &dir_stat) != 0) {
    LINTIME_CHECK(::mkdir(model_dir.c_str(), 0755) == 0, "cannot create model folder '", model_dir, "'");
  }
  save_safetensors(model_dir + "/model.safetensors", model.named_parameters(), {{"format", "pt"}});
  model.config().save(model_dir + "/config.json");
}

}  // namespace lintime::io
