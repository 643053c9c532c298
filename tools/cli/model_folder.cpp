#include "tools/cli/model_folder.h"

#include "core/error.h"

namespace lintime::cli {

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  fail("--dtype must be float32, bfloat16 or float16, got '", name, "'");
}

}  // namespace lintime::cli
