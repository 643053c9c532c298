// Pieces shared by the Taylor linear attention forms (reference, chunk, step): the compute
// dtype, the split of packed sequences, and the read-out o = numerator / (denominator + eps).
#pragma once

#include "ops/based/taylor_attention.h"

#include <ATen/core/Tensor.h>

#include <functional>

namespace lintime::ops::taylor {

// fp64 when any input is fp64, else fp32.
at::ScalarType compute_dtype_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// A form over B sequences of equal length, in the compute dtype: (q, k, v, S0, z0) -> (o, S, z).
using SequenceForm = std::function<TaylorOutputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 at::Tensor, at::Tensor)>;

// Casts to the compute dtype, fills absent initial states with zeros, runs `form` on the batch
// or on each packed sequence, and returns o in q's dtype (final states only when requested).
TaylorOutputs run_per_sequence(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& initial_state, const at::Tensor& initial_normalizer,
                               bool output_final_state, const at::Tensor& cu_seqlens,
                               const SequenceForm& form);

// o = numerator / (denominator + eps) when normalize, else the numerator. numerator [..., V],
// denominator [...].
at::Tensor read_out(const at::Tensor& numerator, const at::Tensor& denominator, bool normalize, double eps);

}  // namespace lintime::ops::taylor
