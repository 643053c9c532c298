// The causal LM of a model folder, whichever kind its config.json describes: fla GSA
// (model_type "gsa") or HazyResearch BASED (a GPT-2-style config with alt_mixer), weights in
// model.safetensors or a sharded index, converted to `dtype` on `device`.
#pragma once

#include "models/causal_lm.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>

namespace lintime::io {

// Throws lintime::Error naming the file, the tensor or the unsupported model type.
std::unique_ptr<models::CausalLm> load_causal_lm(const std::string& model_dir, at::ScalarType dtype,
                                                 const c10::Device& device);

}  // namespace lintime::io
