// Cross-entropy of a linear head (the LM loss) that never materialises the [tokens, vocabulary]
// logits of a whole batch: tokens are taken chunk_tokens at a time, and each chunk's gradient with
// respect to hidden, weight and bias is formed in the forward while its logits exist (as fla's
// FusedLinearCrossEntropy and Liger's fused linear cross-entropy do). Peak extra memory is
// O(chunk_tokens · V) plus the fp32 weight-gradient accumulator, instead of O(N · V).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace lintime::train {

struct LinearCrossEntropyOptions {
  int64_t chunk_tokens = 4096;   // tokens per chunk of logits
  bool logits_in_fp32 = true;    // form each chunk's logits and softmax in fp32 (from bf16/fp16 inputs)
  double normalizer = 0;         // loss = sum over targets / normalizer; 0: the number of targets
                                 // (labels != ignore_index)
  int64_t ignore_index = -100;
};

// loss = Σ_{t: labels[t] != ignore} (logsumexp(h_t W^T + b) − (h_t W^T + b)[labels[t]]) / normalizer
// hidden [N, D], weight [V, D], bias [V] or undefined, labels int64 [N]. Differentiable with
// respect to hidden, weight and bias (autograd; first order only), the gradients formed chunk by
// chunk in the forward and scaled by the incoming gradient in the backward. Only the gradients of
// inputs that require grad are formed; none when grad mode is off or nothing requires grad.
// The loss is a 0-dim float64 tensor for float64 inputs, float32 otherwise. With every label
// ignored it is 0 (the count normalizer becomes 1) and every gradient is zero.
// Throws lintime::Error for mismatched shapes or devices and for a label outside [0, V).
at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
                                const at::Tensor& labels, const LinearCrossEntropyOptions& options = {});

// The plain form (full logits, at::cross_entropy) — the reference the tests compare against.
// Logits are formed in fp32 from bf16/fp16 inputs when options.logits_in_fp32, else in the
// hidden dtype; chunk_tokens is not used. Same loss dtype, normalizer and checks as above.
at::Tensor linear_cross_entropy_reference(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
                                          const at::Tensor& labels, const LinearCrossEntropyOptions& options = {});

}  // namespace lintime::train
