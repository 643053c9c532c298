// The "gsa" architecture: fla's GSAForCausalLM folders, current and legacy layouts.
#include "models/gsa_checkpoint.h"

#include "core/error.h"
#include "core/paths.h"
#include "io/model_weights.h"
#include "models/architecture.h"
#include "models/hybrid_attention.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <regex>
#include <sys/stat.h>

namespace lintime::models {
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

io::WeightSource gsa_weight_source(const std::string& name, GsaLayout layout, int64_t intermediate_size) {
  std::string layer, rest;
  if (layout == GsaLayout::current || !split_layer_name(name, layer, rest)) return {name};
  const std::string prefix = "model.layers." + layer + ".";
  if (rest == "attn_norm.weight") return {prefix + "attn.norm.weight"};
  if (rest == "mlp_norm.weight") return {prefix + "mlp.norm.weight"};
  if (rest == "mlp.gate_proj.weight") return {prefix + "mlp.gate_proj.weight", 2 * intermediate_size, 0};
  if (rest == "mlp.up_proj.weight") return {prefix + "mlp.gate_proj.weight", 2 * intermediate_size, intermediate_size};
  return {name};
}

std::unique_ptr<GsaModel> load_gsa_model(const std::string& model_dir, at::ScalarType dtype, c10::Device device) {
  if (const std::string problem = model_folder_problem(model_dir); !problem.empty()) fail(problem);
  const GsaConfig config = GsaConfig::load(model_dir + "/config.json");
  const io::ModelWeights weights(model_dir);
  auto model = allocate_model<GsaModel>(config, dtype, device);
  io::load_module_weights(*model, weights, gsa_weight_table(config, weights));
  model->to(device, dtype);
  return model;
}

io::WeightTable gsa_weight_table(const GsaConfig& config, const io::ModelWeights& weights) {
  const GsaLayout layout = detect_gsa_layout(weights.names());
  const int64_t intermediate = config.resolved_intermediate_size();
  return [layout, intermediate](const std::string& name, const at::Tensor&) {
    return gsa_weight_source(name, layout, intermediate);
  };
}

namespace {

std::string describe_gsa(const nlohmann::json& json) {
  const GsaConfig config = GsaConfig::from_json(json);
  const std::string hybrid = hybrid_attention_summary(config.attn, config.num_hidden_layers, config.hidden_size);
  char text[640];
  std::snprintf(text, sizeof text,
                "model: GSA causal LM (fla model_type gsa), hidden %lld, %lld layers%s, %lld heads (%lld kv), %lld slots, "
                "vocab %lld\nparameters: %lld\nrecurrent state: %lld bytes per sequence%s\n",
                static_cast<long long>(config.hidden_size), static_cast<long long>(config.num_hidden_layers), hybrid.c_str(),
                static_cast<long long>(config.num_heads), static_cast<long long>(config.resolved_num_kv_heads()),
                static_cast<long long>(config.resolved_num_slots()), static_cast<long long>(config.vocab_size),
                static_cast<long long>(GsaModel::parameter_count_for(config)),
                static_cast<long long>(GsaModel::state_bytes_per_sequence_for(config)),
                hybrid.empty() ? "" : " (softmax-attention layers counted at 1024 tokens)");
  return text;
}

}  // namespace

Architecture gsa_architecture() {
  return {"gsa", "\"gsa\" (fla's GSAForCausalLM)",
          [](const nlohmann::json& config) { return model_type_of(config) == "gsa"; },
          describe_gsa,
          [](const nlohmann::json& config, at::ScalarType dtype, const c10::Device& device) {
            return as_causal_lm(allocate_model<GsaModel>(GsaConfig::from_json(config), dtype, device));
          },
          [](const nlohmann::json& config, const io::ModelWeights& weights) {
            return gsa_weight_table(GsaConfig::from_json(config), weights);
          },
          [](const nlohmann::json& config, uint64_t seed) {
            return as_causal_lm(random_model<GsaModel>(GsaConfig::from_json(config), seed));
          }};
}

}  // namespace lintime::models
