// The base of every layer and model: a registry of named parameters and child modules.
// Parameters are plain at::Tensor members; the registry keeps pointers to them so that moving
// a model to another device or dtype updates the members in place. Names are the dotted
// paths of fla / Hugging Face checkpoints ("layers.0.attn.q_proj.weight").
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lintime::layers {

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
  // Moves/casts every parameter; requires_grad is kept.
  void to(const c10::Device& device, std::optional<at::ScalarType> dtype = std::nullopt);
  void set_requires_grad(bool requires_grad);
  void zero_grad();

 protected:
  // Registers a member tensor under `name`; the member must outlive the module (it is one).
  void register_parameter(std::string name, at::Tensor& parameter);
  void register_module(std::string name, Module& child);

 private:
  std::vector<std::pair<std::string, at::Tensor*>> parameters_;
  std::vector<std::pair<std::string, Module*>> children_;
};

}  // namespace lintime::layers
