// Filling a model's parameters from checkpoint files through a weight table: for every
// parameter, the checkpoint tensor it comes from (and, for fused tensors, which rows). All names,
// shapes and dtypes are checked before any parameter changes, so a failed load leaves the
// model as it was; errors are one line naming the tensor and what was expected.
#pragma once

#include "io/safetensors.h"
#include "layers/module.h"

#include <functional>
#include <string>

namespace lintime::io {

struct WeightSource {
  std::string tensor;        // name in the checkpoint
  int64_t stored_rows = -1;  // the stored tensor's first dimension when it fuses several
  int64_t row_begin = 0;     // this parameter's rows [row_begin, row_begin + its rows)
};

// The checkpoint tensor of each parameter (parameter name and the parameter itself in).
using WeightTable = std::function<WeightSource(const std::string& name, const at::Tensor& parameter)>;

// Copies the weights into `module`'s parameters (converted to each parameter's dtype and
// device). Every parameter's tensor must exist with a matching shape and a floating-point dtype,
// and every tensor of the files must feed some parameter. Throws lintime::Error otherwise.
void load_module_weights(layers::Module& module, const ModelWeights& weights, const WeightTable& table);

}  // namespace lintime::io
