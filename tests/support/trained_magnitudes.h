// Weights at the magnitudes of a trained model, for tests of whole models: norm gains in
// [0.5, 2] (away from the initialiser's 1), unit-scale projections N(0, 1/in), embeddings
// N(0, 1), other vectors (biases, conv taps) N(0, 0.1). Header-only so that the support library
// needs nothing above lintime_core; any lintime Module works.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <string>

namespace lintime::testing {

template <typename ModuleType>
void set_trained_magnitudes(ModuleType& module, at::Generator& generator) {
  at::NoGradGuard no_grad;
  module.for_each_parameter([&](const std::string& name, at::Tensor& parameter) {
    if (name.find("norm") != std::string::npos) {
      parameter.uniform_(0.5, 2.0, generator);
    } else if (parameter.dim() == 2) {
      const bool embedding = name.find("embed") != std::string::npos;
      parameter.normal_(0.0, embedding ? 1.0 : 1.0 / std::sqrt(static_cast<double>(parameter.size(1))), generator);
    } else {
      parameter.normal_(0.0, 0.1, generator);
    }
  });
}

}  // namespace lintime::testing
