// The base of every layer and model: a registry of named parameters and child modules.
// Parameters are plain at::Tensor members; the registry keeps pointers to them so that moving
// a model to another device or dtype updates the members in place. Names are the dotted
// paths of fla / Hugging Face checkpoints ("layers.0.attn.q_proj.weight").
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/TensorOptions.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lintime::layers {

// Parameter creation. Layers normally draw their parameters on the CPU in fp32 from a generator.
// While a WeightsToBeLoaded scope is alive on this thread they are instead allocated
// uninitialised in the scope's dtype on its device and nothing is drawn: a loader that
// overwrites every parameter then neither draws a large model at random nor holds it twice.
class WeightsToBeLoaded {
 public:
  explicit WeightsToBeLoaded(at::TensorOptions options);
  ~WeightsToBeLoaded();
  WeightsToBeLoaded(const WeightsToBeLoaded&) = delete;
  WeightsToBeLoaded& operator=(const WeightsToBeLoaded&) = delete;

 private:
  const WeightsToBeLoaded* previous_;
  at::TensorOptions options_;
  friend at::Tensor new_parameter(at::IntArrayRef sizes);
  friend bool drawing_parameters();
};

// An uninitialised parameter: fp32 on the CPU, or in the options of the WeightsToBeLoaded scope.
at::Tensor new_parameter(at::IntArrayRef sizes);
// False inside a WeightsToBeLoaded scope; the init_* functions below then leave tensors as they are.
bool drawing_parameters();
void init_normal(at::Tensor& parameter, double std, at::Generator& generator);
void init_uniform(at::Tensor& parameter, double bound, at::Generator& generator);  // U(−bound, bound)
void init_constant(at::Tensor& parameter, double value);

class Module {
 public:
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  // Every parameter with its dotted name, depth first in registration order.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters(const std::string& prefix = "") const;
  // Calls fn on each parameter by reference (to replace or modify it).
  void for_each_parameter(const std::function<void(const std::string&, at::Tensor&)>& fn,
                          const std::string& prefix = "");
  int64_t parameter_count() const;
  // Moves/casts every parameter; requires_grad is kept. Then calls parameters_moved() on every
  // module of the tree.
  void to(const c10::Device& device, std::optional<at::ScalarType> dtype = std::nullopt);
  void set_requires_grad(bool requires_grad);
  void zero_grad();

 protected:
  // After to() replaced every parameter: a layer that arranged its parameters in one buffer
  // (place_adjacent) arranges the new ones again.
  virtual void parameters_moved() {}
  // Registers a member tensor under `name`; the member must outlive the module (it is one).
  void register_parameter(std::string name, at::Tensor& parameter);
  void register_module(std::string name, Module& child);

 private:
  void notify_parameters_moved();
  std::vector<std::pair<std::string, at::Tensor*>> parameters_;
  std::vector<std::pair<std::string, Module*>> children_;
};

}  // namespace lintime::layers
