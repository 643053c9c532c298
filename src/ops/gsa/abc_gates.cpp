// ABC slot gates (gsa.md §1): from raw slot logits s̃, z_t = logcumsumexp over time of s̃_t,
// g_t = z_{t-1} - z_t with g_0 = 0, s_t = exp(s̃_t - z_t). Vectorised over time with
// logcumsumexp, restarted for every packed sequence. Differentiable ATen (registered as
// CompositeImplicitAutograd, so autograd differentiates it).
#include "ops/gsa/gsa.h"

#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <vector>

namespace lintime::ops {
namespace {

// logits [b, L, H, M] in the compute dtype -> (s, g) of one run of sequences.
std::pair<at::Tensor, at::Tensor> gates_of_sequence(const at::Tensor& logits) {
  const int64_t length = logits.size(1);
  if (length == 0) return {logits, logits};
  const auto log_normaliser = at::logcumsumexp(logits, 1);  // z [b, L, H, M]
  const auto previous = at::cat(
      {log_normaliser.narrow(1, 0, 1), log_normaliser.narrow(1, 0, length - 1)}, 1);
  return {(logits - log_normaliser).exp(), previous - log_normaliser};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> abc_gates(const at::Tensor& s_logits,
                                             const at::Tensor& cu_seqlens) {
  const char* op = "lintime::abc_gates";
  check_shape(op, "s_logits", s_logits, {{"B", -1}, {"T", -1}, {"H", -1}, {"M", -1}});
  check_floating(op, "s_logits", s_logits);
  const auto logits = s_logits.to(compute_dtype(s_logits.scalar_type()));
  at::Tensor s, g;
  if (!cu_seqlens.defined()) {
    std::tie(s, g) = gates_of_sequence(logits);
  } else {
    check_cu_seqlens(op, cu_seqlens, s_logits.size(0), s_logits.size(1));
    const std::vector<int64_t> offsets = sequence_offsets(cu_seqlens);
    std::vector<at::Tensor> writes, gates;
    for (size_t n = 0; n + 1 < offsets.size(); ++n) {
      auto [write, gate] = gates_of_sequence(logits.narrow(1, offsets[n], offsets[n + 1] - offsets[n]));
      writes.push_back(write);
      gates.push_back(gate);
    }
    s = at::cat(writes, 1);
    g = at::cat(gates, 1);
  }
  return {s.to(s_logits.scalar_type()), g.to(s_logits.scalar_type())};
}

}  // namespace lintime::ops
