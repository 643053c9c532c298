// fla GSA checkpoints (gsa.md §4): config.json (model_type "gsa") and safetensors weights in a
// model folder, in fla's current layout or the legacy one (mid-2024 to Feb 2025: attn.norm /
// mlp.norm, and mlp.gate_proj [2I, d] holding the gate rows, then the up rows).
#pragma once

#include "io/model_weights.h"
#include "models/gsa_model.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>

namespace lintime::io {

enum class GsaLayout { current, legacy };

// The layout a set of tensor names is in (legacy when a layer holds attn.norm or mlp.norm).
GsaLayout detect_gsa_layout(const std::vector<std::string>& tensor_names);

// The checkpoint tensor a parameter of lintime's GsaModel comes from, in `layout`.
// `intermediate_size` locates the up rows in the legacy fused gate_proj.
WeightSource gsa_weight_source(const std::string& parameter_name, GsaLayout layout, int64_t intermediate_size);

// Reads MODEL_DIR/config.json and the weights (model.safetensors or the sharded index), builds
// the model in `dtype` on `device`. Throws lintime::Error naming the file and tensor on any
// mismatch; no partly loaded model is returned.
std::unique_ptr<models::GsaModel> load_gsa_model(const std::string& model_dir, at::ScalarType dtype = at::kFloat,
                                                 c10::Device device = c10::Device(c10::kCPU));

// Writes config.json and model.safetensors (fla's current layout, the parameters' dtype) into
// model_dir, each file atomically.
void save_gsa_model(const models::GsaModel& model, const std::string& model_dir);

}  // namespace lintime::io
