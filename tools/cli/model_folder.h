// What `forward` and `generate` share: the model of a folder (config.json's model_type decides)
// on a device in a dtype, and the option values those commands take.
#pragma once

#include "models/gsa_model.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>

namespace lintime::cli {

// "float32" | "bfloat16" | "float16" -> dtype; throws lintime::Error otherwise.
at::ScalarType parse_dtype(const std::string& name);

// The causal LM in MODEL_DIR. Supported: fla GSA (model_type "gsa"). Throws lintime::Error
// naming the model type otherwise.
std::unique_ptr<models::GsaModel> load_causal_lm(const std::string& model_dir, at::ScalarType dtype,
                                                 const c10::Device& device);

}  // namespace lintime::cli
