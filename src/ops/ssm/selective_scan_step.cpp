// Selective-scan decoding: one token of the recurrence in selective_scan.h, functional and in
// place. The state is read and written once per step (memory-bound); computation in the
// compute dtype.
#include "ops/ssm/selective_scan.h"

#include <ATen/ATen.h>

namespace lintime::ops {
namespace {

// x, dt [batch, D], A [D, N], B, C [batch, N], D [D] or undefined, state [batch, D, N], all in the
// compute dtype. Returns (y [batch, D], new state).
std::pair<at::Tensor, at::Tensor> step(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                       const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                       const at::Tensor& state) {
  const at::Tensor decay = at::exp(dt.unsqueeze(2) * A);                                 // [batch, D, N]
  const at::Tensor new_state = decay * state + (dt * x).unsqueeze(2) * B.unsqueeze(1);  // [batch, D, N]
  at::Tensor y = at::matmul(new_state, C.unsqueeze(2)).squeeze(2);                       // [batch, D]
  if (D.defined()) y = y + x * D;
  return {y, new_state};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> selective_scan_step(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                                       const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                                       const at::Tensor& state) {
  selective_scan_step_check_inputs("lintime::selective_scan_step", x, dt, A, B, C, D, state);
  const at::ScalarType dtype = selective_scan_compute_dtype(x, dt, A, B, C);
  auto [y, new_state] = step(x.to(dtype), dt.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype),
                             D.defined() ? D.to(dtype) : D, state.to(dtype));
  return {y.to(x.scalar_type()), new_state};
}

at::Tensor selective_scan_step_inplace(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                       const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                       at::Tensor& state) {
  selective_scan_step_check_inputs("lintime::selective_scan_step_", x, dt, A, B, C, D, state);
  const at::ScalarType dtype = selective_scan_compute_dtype(x, dt, A, B, C);
  auto [y, new_state] = step(x.to(dtype), dt.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype),
                             D.defined() ? D.to(dtype) : D, state.to(dtype));
  state.copy_(new_state);
  return y.to(x.scalar_type());
}

}  // namespace lintime::ops
