// The device and dtype names of the command line and of configs, resolved in one place for
// every command (train, eval, forward, generate, perplexity, bench).
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace lintime {

// "cpu", "cuda" (device 0; an error when none is present), "cuda:N" or "auto" (cuda when present).
// Throws lintime::Error naming the value for anything else.
c10::Device resolve_device(const std::string& name);

// "float32" | "bfloat16" | "float16" -> dtype; throws lintime::Error naming the value otherwise.
at::ScalarType parse_dtype(const std::string& name);

// Bytes the machine can still give this process on `device`: the kernel's MemAvailable for the
// CPU; for a GPU, the free device memory (0 when unknown: no check is made).
int64_t available_memory_bytes(const c10::Device& device);

// The most memory this process has held on `device` so far: the caching allocator's peak of
// allocated bytes for a GPU, the process's resident peak (ru_maxrss) for the CPU.
double peak_memory_bytes(const c10::Device& device);

// Refuses an allocation of `bytes` for `what` that cannot fit on `device`, with one line saying
// how much was asked and how much there is ("model weights: 1.2 TB asked, 30.1 GB available on cpu").
void check_fits(const std::string& what, double bytes, const c10::Device& device);

}  // namespace lintime
