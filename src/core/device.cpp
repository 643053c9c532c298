#include "core/device.h"

#include "core/error.h"

#include <ATen/Context.h>

namespace lintime {

c10::Device resolve_device(const std::string& name) {
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name == "cuda") {
    LINTIME_CHECK(at::hasCUDA(), "--device cuda: no CUDA device is available (use cpu or auto)");
    return c10::Device(c10::kCUDA, 0);
  }
  LINTIME_CHECK(name == "auto", "--device must be cpu, cuda or auto, got '", name, "'");
  return at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
}

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  fail("--dtype must be float32, bfloat16 or float16, got '", name, "'");
}

}  // namespace lintime
