// fla GSA checkpoints (gsa.md §4): config.json (model_type "gsa") and safetensors weights in a
// model folder, in fla's current layout or the legacy one (mid-2024 to Feb 2025: attn.norm /
// mlp.norm, and mlp.gate_proj [2I, d] holding the gate rows, then the up rows). The "gsa" entry
// of the architecture registry (architectures/gsa.cpp) loads through these.
#pragma once

#include "io/model_weights.h"
#include "models/gsa_model.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>

namespace lintime::models {

enum class GsaLayout { current, legacy };

// The layout a set of tensor names is in (legacy when a layer holds attn.norm or mlp.norm).
GsaLayout detect_gsa_layout(const std::vector<std::string>& tensor_names);

// The checkpoint tensor a parameter of lintime's GsaModel comes from, in `layout`.
// `intermediate_size` locates the up rows in the legacy fused gate_proj.
io::WeightSource gsa_weight_source(const std::string& parameter_name, GsaLayout layout, int64_t intermediate_size);

// The weight table of a GsaModel of `config` for a folder's `weights`, in the layout they are in.
io::WeightTable gsa_weight_table(const GsaConfig& config, const io::ModelWeights& weights);

// Reads MODEL_DIR/config.json and the weights (model.safetensors or the sharded index), builds
// the model in `dtype` on `device`. Throws lintime::Error naming the file and tensor on any
// mismatch; no partly loaded model is returned.
std::unique_ptr<GsaModel> load_gsa_model(const std::string& model_dir, at::ScalarType dtype = at::kFloat,
                                                 c10::Device device = c10::Device(c10::kCPU));

// fla's current layout is lintime's parameter names: a GsaModel is saved with
// io::save_model_folder(model.named_parameters(), model.config().to_json(), dir).

}  // namespace lintime::models
