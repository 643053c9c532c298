// Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_: every gradient is
// scaled by min(1, max_norm / (total_norm + 1e-6)). No host synchronisation happens unless
// error_if_nonfinite is set.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace lintime::train {

// Clips in place and returns the total norm before clipping (0-d float32 tensor on the
// gradients' device; 0 when no parameter has a gradient). Parameters without .grad() are
// skipped. With error_if_nonfinite, a NaN/Inf norm throws lintime::Error before any change.
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm,
                          bool error_if_nonfinite = false);
at::Tensor clip_grad_norm(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters,
                          double max_norm, bool error_if_nonfinite = false);

// The global L2 norm of the gradients without clipping.
at::Tensor grad_norm(const std::vector<at::Tensor>& parameters);

}  // namespace lintime::train
