// The architecture registry (style.md; llama.cpp's habit): one entry per kind of model folder,
// each in its own file under architectures/. An entry recognises its config.json, describes the
// model from the config alone (what `lintime info` prints), and loads a folder into a CausalLm.
// Commands look architectures up here; none names one. Adding an architecture is one file and
// one line in architecture.cpp.
#pragma once

#include "core/device.h"
#include "io/model_weights.h"
#include "layers/module.h"
#include "models/causal_lm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lintime::models {

struct Architecture {
  const char* name;  // "gsa", "gla", "llama", "based"
  const char* what;  // how errors and listings name it: "\"gsa\" (fla's GSAForCausalLM)"
  // True when `config` (a config.json object) is this architecture's.
  bool (*detects)(const nlohmann::json& config);
  // The lines `lintime info` prints: the model, its parameter count, its decoding state.
  std::string (*describe)(const nlohmann::json& config);
  // The model of `config` with its parameters allocated in `dtype` on `device` and not
  // initialised: load_causal_lm fills them from a folder, a benchmark at random.
  std::unique_ptr<CausalLm> (*create)(const nlohmann::json& config, at::ScalarType dtype, const c10::Device& device);
  // The checkpoint tensor of each parameter for a folder's `weights`; null: the same names.
  io::WeightTable (*weight_table)(const nlohmann::json& config, const io::ModelWeights& weights);
  // The model of `config` on the CPU in fp32 with the architecture's own initialisation, drawn
  // from a generator seeded with `seed` (a model to train from scratch).
  std::unique_ptr<CausalLm> (*build)(const nlohmann::json& config, uint64_t seed);
};

// Every registered architecture, in lookup order.
const std::vector<Architecture>& architectures();

// A config's "model_type" when it is an object holding one as a string, else "" (detection
// must not throw on a config.json of another shape: architecture_of names what it found).
std::string model_type_of(const nlohmann::json& config);

// The architecture of `config`, read from `where` (named in the error when none matches).
const Architecture& architecture_of(const nlohmann::json& config, const std::string& where);

// The causal LM of a model folder (config.json and its weights), whichever registered
// architecture it holds, in `dtype` on `device`. Throws lintime::Error naming the file or the
// tensor; every name, shape and dtype is checked before any weight is used.
std::unique_ptr<CausalLm> load_causal_lm(const std::string& model_dir, at::ScalarType dtype, const c10::Device& device);

// The model of a config.json object, whichever registered architecture it is, with random
// weights from `seed` (Architecture::build); `where` names the config in errors.
std::unique_ptr<CausalLm> build_causal_lm(const nlohmann::json& config, uint64_t seed, const std::string& where);

// Writes the model as a folder load_causal_lm reads back: its config.json and model.safetensors
// (the parameters in their dtype, under the checkpoint names), each file atomically. Throws
// lintime::Error for a model that knows no config.json.
void save_causal_lm(CausalLm& model, const std::string& model_dir);

// For the entries' build: Model built from `config` on the CPU in fp32, drawn from `seed`.
template <class Model, class Config>
std::unique_ptr<Model> random_model(const Config& config, uint64_t seed) {
  // Sizes are bounded by the configs' checks, so the count cannot overflow; refuse what cannot fit.
  check_fits("the model's weights (" + std::to_string(Model::parameter_count_for(config)) + " parameters in float32)",
             4.0 * static_cast<double>(Model::parameter_count_for(config)), c10::Device(c10::kCPU));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return std::make_unique<Model>(config, generator);
}

// For the entries' create: Model built from `config` with its parameters allocated in `dtype`
// on `device`, nothing drawn.
template <class Model, class Config>
std::unique_ptr<Model> allocate_model(const Config& config, at::ScalarType dtype, const c10::Device& device) {
  const int64_t parameters = Model::parameter_count_for(config);
  check_fits("the model's weights (" + std::to_string(parameters) + " parameters in " + c10::toString(dtype) + ")",
             static_cast<double>(parameters) * static_cast<double>(c10::elementSize(dtype)), device);
  at::Generator unused = at::make_generator<at::CPUGeneratorImpl>(0);
  layers::WeightsToBeLoaded scope(at::TensorOptions().dtype(dtype).device(device));
  return std::make_unique<Model>(config, unused);
}

// The entries, one per file in architectures/.
Architecture gsa_architecture();
Architecture gla_architecture();
Architecture llama_architecture();
Architecture based_architecture();

}  // namespace lintime::models
