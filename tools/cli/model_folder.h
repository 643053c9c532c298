// The option values the model-folder commands (forward, generate, perplexity) share.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace lintime::cli {

// "float32" | "bfloat16" | "float16" -> dtype; throws lintime::Error otherwise.
at::ScalarType parse_dtype(const std::string& name);

}  // namespace lintime::cli
