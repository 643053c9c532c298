// Which fused CUDA paths run, from one documented switch: the environment variable
// LINTIME_UNFUSED lists the paths to replace by their ATen forms, comma-separated, e.g.
// LINTIME_UNFUSED=taylor,conv (or "all"). Unset or empty: every fused path runs wherever its
// kernel takes the inputs. It exists to compare a kernel with the general path it replaces.
//   taylor     BASED's Taylor attention (prefill, backward, step)
//   window     sliding-window attention (forward, backward)
//   conv       short convolutions (forward, backward, step)
//   epilogues  the inference epilogues (SwiGLU product, GSA activations, add + RMSNorm)
// The GSA kernels have no switch: they run under the CUDA dispatch key for what they take.
#pragma once

namespace lintime {

enum class FusedPath { taylor, window, conv, epilogues };

// Read once per process. Throws lintime::Error naming an unknown path in LINTIME_UNFUSED.
bool fused_path_enabled(FusedPath path);

// The rule itself: whether `path` stays fused when LINTIME_UNFUSED is `setting` (nullptr: unset).
bool fused_path_enabled_under(const char* setting, FusedPath path);

}  // namespace lintime
