// Selective-scan reference: the recurrence of selective_scan.h one token at a time, written in
// differentiable, out-of-place ATen ops so that autograd through it yields the reference
// gradients (of x, dt, A, B, C, D and the initial state).
#include "ops/ssm/selective_scan.h"

#include <ATen/ATen.h>

#include <vector>

namespace lintime::ops {

std::tuple<at::Tensor, at::Tensor> selective_scan_reference_fwd(const at::Tensor& x, const at::Tensor& dt,
                                                                const at::Tensor& A, const at::Tensor& B,
                                                                const at::Tensor& C, const at::Tensor& D,
                                                                const at::Tensor& initial_state,
                                                                bool output_final_state) {
  selective_scan_check_inputs("lintime::selective_scan_reference", x, dt, A, B, C, D, initial_state);
  const at::ScalarType dtype = selective_scan_compute_dtype(x, dt, A, B, C);
  const at::Tensor xc = x.to(dtype), dtc = dt.to(dtype), Ac = A.to(dtype), Bc = B.to(dtype), Cc = C.to(dtype);
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2), state_dim = A.size(1);

  at::Tensor state = initial_state.defined() ? initial_state.to(dtype)
                                             : at::zeros({batch, channels, state_dim}, xc.options());  // [batch, D, N]
  std::vector<at::Tensor> outputs;
  outputs.reserve(length);
  for (int64_t t = 0; t < length; ++t) {
    const at::Tensor dt_t = dtc.select(1, t);                                        // [batch, D]
    const at::Tensor decay = at::exp(dt_t.unsqueeze(2) * Ac);                        // [batch, D, N]
    const at::Tensor input = (dt_t * xc.select(1, t)).unsqueeze(2) * Bc.select(1, t).unsqueeze(1);
    state = decay * state + input;
    outputs.push_back((state * Cc.select(1, t).unsqueeze(1)).sum(2));                // [batch, D]
  }
  at::Tensor y = length > 0 ? at::stack(outputs, 1) : at::zeros({batch, 0, channels}, xc.options());
  if (D.defined()) y = y + xc * D.to(dtype);
  return {y.to(x.scalar_type()), output_final_state ? state : at::Tensor()};
}

}  // namespace lintime::ops
