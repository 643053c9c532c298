// libFuzzer's entry point for every target of fuzz_targets.h; LINTIME_FUZZ_TARGET names the one
// this process fuzzes (`make fuzz` runs each in turn). Anything run_fuzz_input reports aborts, so
// that libFuzzer keeps the input as a crash.
#include "fuzz/fuzz_targets.h"

#include <cstdio>
#include <cstdlib>

namespace {

const lintime::fuzz::FuzzTarget& chosen_target() {
  static const lintime::fuzz::FuzzTarget* target = [] {
    const char* name = std::getenv("LINTIME_FUZZ_TARGET");
    const auto* found = name != nullptr ? lintime::fuzz::find_fuzz_target(name) : nullptr;
    if (found == nullptr) {
      std::fprintf(stderr, "lintime_fuzz: set LINTIME_FUZZ_TARGET to one of:");
      for (const auto& t : lintime::fuzz::fuzz_targets()) std::fprintf(stderr, " %s", t.name);
      std::fprintf(stderr, "\n");
      std::exit(2);
    }
    return found;
  }();
  return *target;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string problem =
      lintime::fuzz::run_fuzz_input(chosen_target(), std::string_view(reinterpret_cast<const char*>(data), size));
  if (!problem.empty()) {
    std::fprintf(stderr, "lintime_fuzz (%s): %s\n", chosen_target().name, problem.c_str());
    std::abort();
  }
  return 0;
}
