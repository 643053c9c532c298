// Mamba's selective scan (Gu & Dao 2023, S6): a diagonal state space model whose step size and
// input/output maps depend on the token. Reference recurrence, chunked form (training, prefill)
// and one-token step (decoding); README.md has the chunk derivation.
//
// Per channel d < D and state n < N:
//   h_t[d, n] = exp(dt_t[d] · A[d, n]) · h_{t−1}[d, n] + dt_t[d] · B_t[n] · x_t[d]
//   y_t[d]    = Σ_n C_t[n] · h_t[d, n] + D[d] · x_t[d]
// Shapes: x, dt [batch, T, D] (dt > 0: the caller has applied softplus and the bias); A [D, N]
// (< 0); B, C [batch, T, N] (shared by every channel); D [D] or undefined (no skip term);
// initial_state [batch, D, N] (undefined = zeros). Computation in fp32 (fp64 when any input is
// fp64); y in x's dtype; final_state in the compute dtype, undefined unless requested.
// Plain functions (not registered ops); autograd through their ATen ops gives the gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

namespace lintime::ops {

// Validates the inputs of the sequence entry points; throws with the tensor's name and shape.
void selective_scan_check_inputs(const char* op, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                 const at::Tensor& initial_state);

// Validates the inputs of the step: x, dt [batch, D], B, C [batch, N], state [batch, D, N].
void selective_scan_step_check_inputs(const char* op, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                      const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                      const at::Tensor& state);

// The dtype the scan computes in: fp64 when any of x, dt, A, B, C is fp64, else fp32.
at::ScalarType selective_scan_compute_dtype(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C);

// Token-by-token recurrence in differentiable, out-of-place ATen ops. Returns (y, final_state).
std::tuple<at::Tensor, at::Tensor> selective_scan_reference_fwd(const at::Tensor& x, const at::Tensor& dt,
                                                                const at::Tensor& A, const at::Tensor& B,
                                                                const at::Tensor& C, const at::Tensor& D,
                                                                const at::Tensor& initial_state,
                                                                bool output_final_state);

// Chunks of chunk_size tokens: inside a chunk every state is a masked product with the decays
// exp(L_t − L_s) (L the cumulative sum of dt·A, every exponent <= 0); the state is carried
// from chunk to chunk. Returns (y, final_state).
constexpr int64_t kSelectiveScanDefaultChunk = 16;
std::tuple<at::Tensor, at::Tensor> selective_scan_chunk_fwd(const at::Tensor& x, const at::Tensor& dt,
                                                            const at::Tensor& A, const at::Tensor& B,
                                                            const at::Tensor& C, const at::Tensor& D,
                                                            const at::Tensor& initial_state, bool output_final_state,
                                                            int64_t chunk_size = kSelectiveScanDefaultChunk);

// One token: x, dt [batch, D], B, C [batch, N], state [batch, D, N]. The functional form returns
// (y [batch, D] in x's dtype, the new state in the compute dtype); the in-place form writes the
// new state into `state` and returns y.
std::tuple<at::Tensor, at::Tensor> selective_scan_step(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                                       const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                                       const at::Tensor& state);
at::Tensor selective_scan_step_inplace(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                       const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                       at::Tensor& state);

}  // namespace lintime::ops
