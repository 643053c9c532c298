// Sliding-window causal softmax attention: the reference (all scores, banded mask), the blocked
// form (query blocks against the keys they see) and the ring-buffer decoding step.
#include "ops/based/sliding_window_attention.h"

#include "core/tensor_checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace lintime::ops {
namespace {

constexpr int64_t kBlock = 64;

at::ScalarType compute_dtype_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (const at::Tensor* x : {&q, &k, &v}) {
    if (x->scalar_type() == at::kDouble) return at::kDouble;
  }
  return at::kFloat;
}

// Runs form(q, k, v) -> o on the batch, or on each packed sequence, in the compute dtype.
template <class Form>
at::Tensor per_sequence(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& cu_seqlens, Form form) {
  const at::ScalarType dtype = compute_dtype_of(q, k, v);
  const at::Tensor qc = q.to(dtype), kc = k.to(dtype), vc = v.to(dtype);
  if (!cu_seqlens.defined()) return form(qc, kc, vc).to(q.scalar_type());
  const std::vector<int64_t> offsets = sequence_offsets(cu_seqlens);
  std::vector<at::Tensor> outputs;
  for (size_t n = 0; n + 1 < offsets.size(); ++n) {
    const int64_t start = offsets[n], end = offsets[n + 1];
    outputs.push_back(form(qc.slice(1, start, end), kc.slice(1, start, end), vc.slice(1, start, end)));
  }
  return at::cat(outputs, 1).to(q.scalar_type());
}

// Softmax of masked scores [.., Tq, Tk] times values [.., Tk, V]; a row with no key (never: each
// query sees itself) would give NaN.
at::Tensor attend(const at::Tensor& scores, const at::Tensor& allowed, const at::Tensor& values) {
  const at::Tensor masked = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(masked, -1), values);
}

}  // namespace

void sliding_window_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, int64_t window, const at::Tensor& cu_seqlens) {
  check_shape(op, "k", k, {{"B", -1}, {"T", -1}, {"H", -1}, {"D", -1}});
  const int64_t batch = k.size(0), length = k.size(1), heads = k.size(2);
  check_shape(op, "q", q, {{"B", batch}, {"T", length}, {"H", heads}, {"D", k.size(3)}});
  check_shape(op, "v", v, {{"B", batch}, {"T", length}, {"H", heads}, {"V", -1}});
  TORCH_CHECK(window >= 1, op, ": window (keys seen per query, itself included) must be >= 1, got ", window);
  for (auto [name, tensor] : {std::pair<const char*, const at::Tensor*>{"q", &q}, {"k", &k}, {"v", &v}}) {
    check_floating(op, name, *tensor);
    check_same_device(op, name, *tensor, q.device());
  }
  if (cu_seqlens.defined()) {
    check_same_device(op, "cu_seqlens", cu_seqlens, q.device());
    check_cu_seqlens(op, cu_seqlens, batch, length);
  }
}

at::Tensor sliding_window_attention_reference_fwd(const at::Tensor& q, const at::Tensor& k,
                                                  const at::Tensor& v, int64_t window, double scale,
                                                  const at::Tensor& cu_seqlens) {
  sliding_window_check_inputs("lintime::sliding_window_attention_reference", q, k, v, window, cu_seqlens);
  return per_sequence(q, k, v, cu_seqlens, [&](const at::Tensor& qs, const at::Tensor& ks, const at::Tensor& vs) {
    const int64_t length = qs.size(1);
    const at::Tensor scores = at::matmul(qs.transpose(1, 2), ks.transpose(1, 2).transpose(-1, -2)) * scale;
    const at::Tensor query = at::arange(length, scores.options().dtype(at::kLong)).unsqueeze(1);
    const at::Tensor key = at::arange(length, scores.options().dtype(at::kLong)).unsqueeze(0);
    const at::Tensor allowed = (key <= query).logical_and(key > query - window);  // [T, T]
    return attend(scores, allowed, vs.transpose(1, 2)).transpose(1, 2);            // [B,T,H,V]
  });
}

at::Tensor sliding_window_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        int64_t window, double scale, const at::Tensor& cu_seqlens) {
  sliding_window_check_inputs("lintime::sliding_window_attention", q, k, v, window, cu_seqlens);
  return per_sequence(q, k, v, cu_seqlens, [&](const at::Tensor& qs, const at::Tensor& ks, const at::Tensor& vs) {
    const int64_t batch = qs.size(0), length = qs.size(1), heads = qs.size(2), value_dim = vs.size(3);
    const at::Tensor queries = qs.transpose(1, 2), keys = ks.transpose(1, 2), values = vs.transpose(1, 2);
    std::vector<at::Tensor> outputs;
    for (int64_t start = 0; start < length; start += kBlock) {
      const int64_t end = std::min(start + kBlock, length), first_key = std::max<int64_t>(0, start - window + 1);
      const at::Tensor scores =
          at::matmul(queries.slice(2, start, end), keys.slice(2, first_key, end).transpose(-1, -2)) * scale;
      const auto positions = scores.options().dtype(at::kLong);
      const at::Tensor query = at::arange(start, end, positions).unsqueeze(1);
      const at::Tensor key = at::arange(first_key, end, positions).unsqueeze(0);
      const at::Tensor allowed = (key <= query).logical_and(key > query - window);
      outputs.push_back(attend(scores, allowed, values.slice(2, first_key, end)));
    }
    return length > 0 ? at::cat(outputs, 2).transpose(1, 2)
                      : at::zeros({batch, 0, heads, value_dim}, qs.options());
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> build_sliding_window_cache(const at::Tensor& k,
                                                                                 const at::Tensor& v,
                                                                                 int64_t window) {
  sliding_window_check_inputs("lintime::sliding_window_cache_from_prefill", k, k, v, window, at::Tensor());
  const int64_t batch = k.size(0), length = k.size(1), heads = k.size(2);
  at::Tensor key_cache = at::zeros({batch, heads, window, k.size(3)}, k.options());
  at::Tensor value_cache = at::zeros({batch, heads, window, v.size(3)}, v.options());
  for (int64_t t = std::max<int64_t>(0, length - window); t < length; ++t) {
    key_cache.select(2, t % window).copy_(k.select(1, t));
    value_cache.select(2, t % window).copy_(v.select(1, t));
  }
  return {key_cache, value_cache, at::full({batch}, length, k.options().dtype(at::kLong))};
}

at::Tensor sliding_window_attention_step_inplace(const at::Tensor& q, const at::Tensor& k,
                                                 const at::Tensor& v, int64_t window, double scale,
                                                 at::Tensor& key_cache, at::Tensor& value_cache,
                                                 at::Tensor& positions) {
  const char* op = "lintime::sliding_window_attention_step_";
  check_shape(op, "k", k, {{"B", -1}, {"H", -1}, {"D", -1}});
  const int64_t batch = k.size(0), heads = k.size(1);
  check_shape(op, "q", q, {{"B", batch}, {"H", heads}, {"D", k.size(2)}});
  check_shape(op, "v", v, {{"B", batch}, {"H", heads}, {"V", -1}});
  TORCH_CHECK(window >= 1, op, ": window must be >= 1, got ", window);
  check_shape(op, "key_cache", key_cache, {{"B", batch}, {"H", heads}, {"w", window}, {"D", k.size(2)}});
  check_shape(op, "value_cache", value_cache, {{"B", batch}, {"H", heads}, {"w", window}, {"V", v.size(2)}});
  check_shape(op, "positions", positions, {{"B", batch}});
  TORCH_CHECK(positions.scalar_type() == at::kLong, op, ": positions must be int64, got ",
              positions.scalar_type());
  const at::Tensor slot = positions.remainder(window);                                   // [B]
  const at::Tensor index = slot.view({batch, 1, 1, 1});
  key_cache.scatter_(2, index.expand({batch, heads, 1, k.size(2)}), k.unsqueeze(2).to(key_cache.scalar_type()));
  value_cache.scatter_(2, index.expand({batch, heads, 1, v.size(2)}), v.unsqueeze(2).to(value_cache.scalar_type()));
  const at::ScalarType dtype = compute_dtype_of(q, key_cache, value_cache);
  const at::Tensor scores =
      at::matmul(key_cache.to(dtype), q.to(dtype).unsqueeze(-1)).squeeze(-1) * scale;  // [B,H,w]
  const at::Tensor filled = at::arange(window, positions.options()).unsqueeze(0) <= positions.unsqueeze(1);  // [B,w]
  const at::Tensor o = attend(scores.unsqueeze(2), filled.view({batch, 1, 1, window}), value_cache.to(dtype))
                           .squeeze(2);                                                 // [B,H,V]
  positions.add_(1);
  return o.to(q.scalar_type());
}

}  // namespace lintime::ops
