#include "io/model_weights.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

namespace lintime::io {
namespace {

std::string name_list(const std::vector<std::string>& names) {
  std::string text;
  const size_t shown = std::min<size_t>(names.size(), 8);
  for (size_t i = 0; i < shown; ++i) text += (i ? ", " : "") + std::string("'") + names[i] + "'";
  if (names.size() > shown) text += " and " + std::to_string(names.size() - shown) + " more";
  return text;
}

}  // namespace

void load_module_weights(layers::Module& module, const ModelWeights& weights, const WeightTable& table) {
  const auto parameters = module.named_parameters();
  std::map<std::string, WeightSource> sources;
  std::set<std::string> used;
  std::vector<std::string> missing;
  for (const auto& [name, parameter] : parameters) {
    WeightSource source = table(name, parameter);
    if (!weights.contains(source.tensor)) {
      if (std::find(missing.begin(), missing.end(), source.tensor) == missing.end()) missing.push_back(source.tensor);
    }
    used.insert(source.tensor);
    sources.emplace(name, std::move(source));
  }
  std::vector<std::string> unexpected;
  for (const std::string& name : weights.names())
    if (!used.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty()) {
    std::string message = "checkpoint '" + weights.source() + "' does not match the model:";
    if (!missing.empty()) message += " missing tensors " + name_list(missing);
    if (!missing.empty() && !unexpected.empty()) message += ";";
    if (!unexpected.empty()) message += " unexpected tensors " + name_list(unexpected);
    fail(message);
  }
  for (const auto& [name, parameter] : parameters) {
    const WeightSource& source = sources.at(name);
    const TensorInfo& info = weights.info(source.tensor);
    std::vector<int64_t> expected(parameter.sizes().begin(), parameter.sizes().end());
    if (source.stored_rows >= 0 && !expected.empty()) {
      LINTIME_CHECK(source.row_begin >= 0 && source.row_begin + expected[0] <= source.stored_rows,
                    "weight table: rows [", source.row_begin, ", ", source.row_begin + expected[0], ") of '",
                    source.tensor, "' lie outside its ", source.stored_rows, " rows");
      expected[0] = source.stored_rows;
    }
    LINTIME_CHECK(at::IntArrayRef(info.shape) == at::IntArrayRef(expected), "checkpoint '", weights.source(),
                  "': tensor '", source.tensor, "' has shape ", shape_string(info.shape), ", the model expects ",
                  shape_string(expected));
    LINTIME_CHECK(at::isFloatingType(info.dtype), "checkpoint '", weights.source(), "': tensor '", source.tensor,
                  "' is ", info.dtype_name, ", expected a floating-point dtype (F32, F16, BF16)");
  }
  // Everything is valid: convert first, then commit.
  std::map<std::string, at::Tensor> converted;
  for (const auto& [name, parameter] : parameters) {
    const WeightSource& source = sources.at(name);
    at::Tensor tensor = weights.get(source.tensor, {.dtype = parameter.scalar_type(), .device = parameter.device()});
    if (source.stored_rows >= 0) tensor = tensor.narrow(0, source.row_begin, parameter.size(0));
    converted.emplace(name, tensor);
  }
  at::NoGradGuard no_grad;
  module.for_each_parameter([&](const std::string& name, at::Tensor& parameter) {
    parameter.detach().copy_(converted.at(name));
  });
}

}  // namespace lintime::io
