// The device and dtype names of the command line and of configs, resolved in one place for
// every command (train, eval, forward, generate, perplexity, bench).
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace lintime {

// "cpu", "cuda" (device 0; an error when none is present), "cuda:N" or "auto" (cuda when present).
// Throws lintime::Error naming the value for anything else.
c10::Device resolve_device(const std::string& name);

// "float32" | "bfloat16" | "float16" -> dtype; throws lintime::Error naming the value otherwise.
at::ScalarType parse_dtype(const std::string& name);

}  // namespace lintime
