// Selective scan in chunks (README.md): inside a chunk every state is one masked product of
// relative decays with the chunk's inputs, plus the decayed state carried in from the chunk
// before; only that carry loops. Tensors are laid out [batch, D, N, c] (time last) so that
// the pairwise decays [batch, D, N, c, c] multiply the inputs as a batched matrix product.
// One chunk is formed at a time: without autograd the pairwise decays of one chunk are the
// peak memory. Differentiable ATen ops: autograd gives the gradients.
#include "ops/ssm/selective_scan.h"

#include "core/tensor_checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace lintime::ops {

std::tuple<at::Tensor, at::Tensor> selective_scan_chunk_fwd(const at::Tensor& x, const at::Tensor& dt,
                                                            const at::Tensor& A, const at::Tensor& B,
                                                            const at::Tensor& C, const at::Tensor& D,
                                                            const at::Tensor& initial_state, bool output_final_state,
                                                            int64_t chunk_size) {
  const char* op = "lintime::selective_scan_chunk";
  selective_scan_check_inputs(op, x, dt, A, B, C, D, initial_state);
  TORCH_CHECK(chunk_size >= 1, op, ": chunk_size must be >= 1, got ", chunk_size);
  const at::ScalarType dtype = selective_scan_compute_dtype(x, dt, A, B, C);
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2), state_dim = A.size(1);
  // Channels and states first, time last: [batch, D, T], [batch, N, T].
  const at::Tensor xc = x.to(dtype).transpose(1, 2), dtc = dt.to(dtype).transpose(1, 2);
  const at::Tensor Bc = B.to(dtype).transpose(1, 2), Cc = C.to(dtype).transpose(1, 2);
  const at::Tensor Ac = A.to(dtype).unsqueeze(2);  // [D, N, 1]

  at::Tensor state = initial_state.defined() ? initial_state.to(dtype)
                                             : at::zeros({batch, channels, state_dim}, xc.options());  // [batch, D, N]
  // Pairs (t, s) with s after t: their exponent L_t − L_s would be >= 0, so it is masked to
  // −inf before exp and the decay is an exact 0.
  const int64_t mask_size = std::min(chunk_size, std::max<int64_t>(length, 1));
  const at::Tensor future = at::ones({mask_size, mask_size}, at::TensorOptions().dtype(at::kBool).device(x.device()))
                                .triu(1);
  const double minus_infinity = -std::numeric_limits<double>::infinity();
  std::vector<at::Tensor> outputs;
  for (int64_t start = 0; start < length; start += chunk_size) {
    const int64_t size = std::min(chunk_size, length - start);  // the last chunk may be shorter
    const at::Tensor dt_c = dtc.narrow(2, start, size);       // [batch, D, c]
    const at::Tensor x_c = xc.narrow(2, start, size);         // [batch, D, c]
    const at::Tensor B_c = Bc.narrow(2, start, size);         // [batch, N, c]
    const at::Tensor C_c = Cc.narrow(2, start, size);         // [batch, N, c]
    // L_t = Σ_{s <= t} dt_s A within the chunk: decreasing, <= 0.
    const at::Tensor log_decay = (dt_c.unsqueeze(2) * Ac).cumsum(3);  // [batch, D, N, c]
    // exp(L_t − L_s) for s <= t: the decay from token s's input to token t's state.
    const at::Tensor relative = at::exp((log_decay.unsqueeze(4) - log_decay.unsqueeze(3))
                                            .masked_fill(future.narrow(0, 0, size).narrow(1, 0, size),
                                                         minus_infinity));  // [batch, D, N, c, c]
    const at::Tensor input = (dt_c * x_c).unsqueeze(2) * B_c.unsqueeze(1);  // [batch, D, N, c]
    const at::Tensor states = at::matmul(relative, input.unsqueeze(4)).squeeze(4) +
                              at::exp(log_decay) * state.unsqueeze(3);      // [batch, D, N, c]
    outputs.push_back((states * C_c.unsqueeze(1)).sum(2));                 // [batch, D, c]
    state = states.select(3, size - 1);
  }
  at::Tensor y = outputs.empty() ? at::zeros({batch, channels, 0}, xc.options()) : at::cat(outputs, 2);
  y = y.transpose(1, 2);  // [batch, T, D]
  if (D.defined()) y = y + x.to(dtype) * D.to(dtype);
  return {y.to(x.scalar_type()), output_final_state ? state : at::Tensor()};
}

}  // namespace lintime::ops
