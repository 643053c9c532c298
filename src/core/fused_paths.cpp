#include "core/fused_paths.h"

#include "core/error.h"

#include <cstdlib>
#include <sstream>
#include <string>

namespace lintime {

bool fused_path_enabled_under(const char* setting, FusedPath path) {
  if (setting == nullptr) return true;
  static const char* const kNames[] = {"taylor", "window", "conv", "epilogues"};
  bool enabled = true;
  std::istringstream list(setting);
  for (std::string name; std::getline(list, name, ',');) {
    if (name.empty()) continue;
    if (name == "all") {
      enabled = false;
      continue;
    }
    bool known = false;
    for (int i = 0; i < 4; ++i) {
      if (name != kNames[i]) continue;
      known = true;
      if (static_cast<int>(path) == i) enabled = false;
    }
    LINTIME_CHECK(known, "LINTIME_UNFUSED: unknown path '", name,
                  "' (expected a comma-separated list of taylor, window, conv, epilogues, or all)");
  }
  return enabled;
}

bool fused_path_enabled(FusedPath path) {
  static const char* const setting = std::getenv("LINTIME_UNFUSED");
  return fused_path_enabled_under(setting, path);
}

}  // namespace lintime
