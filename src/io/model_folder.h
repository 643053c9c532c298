// The causal LM of a model folder, whichever kind its config.json describes: fla GSA
// (model_type "gsa"), Hugging Face Llama / Mistral ("llama", "mistral") or HazyResearch BASED
// (a GPT-2-style config with alt_mixer), weights in
// model.safetensors or a sharded index, converted to `dtype` on `device`.
#pragma once

#include "models/causal_lm.h"
#include "models/llama_model.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>

namespace lintime::io {

// Throws lintime::Error naming the file, the tensor or the unsupported model type.
std::unique_ptr<models::CausalLm> load_causal_lm(const std::string& model_dir, at::ScalarType dtype,
                                                 const c10::Device& device);

// A Hugging Face Llama / Mistral folder (model_type "llama" or "mistral"; Hugging Face's
// parameter names, tied or untied head). Nothing is half-loaded: errors come before any weight
// is copied.
std::unique_ptr<models::LlamaModel> load_llama_model(const std::string& model_dir, at::ScalarType dtype,
                                                     const c10::Device& device);
// Writes config.json and model.safetensors (the parameters' dtype), each file atomically.
void save_llama_model(const models::LlamaModel& model, const std::string& model_dir);

}  // namespace lintime::io
