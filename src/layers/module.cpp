// Parameter registry of layers::Module.
#include "layers/module.h"

#include <ATen/ATen.h>

namespace lintime::layers {

namespace {
thread_local const WeightsToBeLoaded* current_scope = nullptr;
}  // namespace

WeightsToBeLoaded::WeightsToBeLoaded(at::TensorOptions options) : previous_(current_scope), options_(options) {
  current_scope = this;
}

WeightsToBeLoaded::~WeightsToBeLoaded() { current_scope = previous_; }

at::Tensor new_parameter(at::IntArrayRef sizes) {
  return at::empty(sizes, current_scope ? current_scope->options_ : at::TensorOptions().dtype(at::kFloat));
}

bool drawing_parameters() { return current_scope == nullptr; }

void init_normal(at::Tensor& parameter, double std, at::Generator& generator) {
  if (drawing_parameters()) parameter.normal_(0.0, std, generator);
}

void init_uniform(at::Tensor& parameter, double bound, at::Generator& generator) {
  if (drawing_parameters()) parameter.uniform_(-bound, bound, generator);
}

void init_constant(at::Tensor& parameter, double value) {
  if (drawing_parameters()) parameter.fill_(value);
}

void Module::register_parameter(std::string name, at::Tensor& parameter) {
  parameters_.emplace_back(std::move(name), &parameter);
}

void Module::register_module(std::string name, Module& child) {
  children_.emplace_back(std::move(name), &child);
}

std::vector<std::pair<std::string, at::Tensor>> Module::named_parameters(const std::string& prefix) const {
  std::vector<std::pair<std::string, at::Tensor>> result;
  for (const auto& [name, tensor] : parameters_) result.emplace_back(prefix + name, *tensor);
  for (const auto& [name, child] : children_) {
    auto nested = child->named_parameters(prefix + name + ".");
    result.insert(result.end(), nested.begin(), nested.end());
  }
  return result;
}

void Module::for_each_parameter(const std::function<void(const std::string&, at::Tensor&)>& fn,
                                const std::string& prefix) {
  for (auto& [name, tensor] : parameters_) fn(prefix + name, *tensor);
  for (auto& [name, child] : children_) child->for_each_parameter(fn, prefix + name + ".");
}

int64_t Module::parameter_count() const {
  int64_t count = 0;
  for (const auto& [name, tensor] : named_parameters()) count += tensor.numel();
  return count;
}

void Module::to(const c10::Device& device, std::optional<at::ScalarType> dtype) {
  for_each_parameter([&](const std::string&, at::Tensor& tensor) {
    const bool requires_grad = tensor.requires_grad();
    at::Tensor moved = tensor.detach().to(device, dtype.value_or(tensor.scalar_type())).contiguous();
    if (moved.data_ptr() == tensor.data_ptr()) moved = moved.clone();
    tensor = moved.set_requires_grad(requires_grad);
  });
  notify_parameters_moved();
}

void Module::notify_parameters_moved() {
  for (auto& [name, child] : children_) child->notify_parameters_moved();
  parameters_moved();
}

void Module::set_requires_grad(bool requires_grad) {
  for_each_parameter([&](const std::string&, at::Tensor& tensor) { tensor.set_requires_grad(requires_grad); });
}

void Module::zero_grad() {
  for_each_parameter([](const std::string&, at::Tensor& tensor) {
    if (tensor.grad().defined()) tensor.mutable_grad() = at::Tensor();
  });
}

}  // namespace lintime::layers
