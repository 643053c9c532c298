// Input validation shared by every GLA entry point (chunk, backward, reference, step): shapes,
// dtypes, devices and cu_seqlens, with messages that name the tensor and the expected shape.
#include "ops/gla/gla.h"

#include "core/tensor_checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

namespace lintime::ops {

void gla_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& g, bool gate_on_value,
                      const at::Tensor& initial_state, const at::Tensor& cu_seqlens) {
  check_shape(op, "k", k, {{"B", -1}, {"T", -1}, {"H", -1}, {"K", -1}});
  const int64_t batch = k.size(0), length = k.size(1), heads = k.size(2), key_dim = k.size(3);
  check_shape(op, "q", q, {{"B", batch}, {"T", length}, {"HQ", -1}, {"K", key_dim}});
  const int64_t query_heads = q.size(2);
  TORCH_CHECK(heads > 0 && query_heads % heads == 0, op,
              ": the query heads HQ must be a multiple of the key/value heads H, got HQ = ",
              query_heads, ", H = ", heads);
  check_shape(op, "v", v, {{"B", batch}, {"T", length}, {"H", heads}, {"V", -1}});
  const int64_t value_dim = v.size(3);
  if (gate_on_value) {
    check_shape(op, "g", g, {{"B", batch}, {"T", length}, {"H", heads}, {"V", value_dim}});
  } else {
    check_shape(op, "g", g, {{"B", batch}, {"T", length}, {"H", heads}, {"K", key_dim}});
  }
  const at::Device device = q.device();
  for (auto [name, tensor] : {std::pair<const char*, const at::Tensor*>{"q", &q},
                              {"k", &k}, {"v", &v}, {"g", &g}}) {
    check_floating(op, name, *tensor);
    check_same_device(op, name, *tensor, device);
  }
  int64_t sequences = batch;
  if (cu_seqlens.defined()) {
    check_same_device(op, "cu_seqlens", cu_seqlens, device);
    sequences = check_cu_seqlens(op, cu_seqlens, batch, length);
  }
  if (initial_state.defined()) {
    check_shape(op, "initial_state", initial_state,
                {{"N", sequences}, {"H", heads}, {"K", key_dim}, {"V", value_dim}});
    check_floating(op, "initial_state", initial_state);
    check_same_device(op, "initial_state", initial_state, device);
  }
}

void gla_step_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const at::Tensor& g, bool gate_on_value,
                           const at::Tensor& state) {
  check_shape(op, "k", k, {{"B", -1}, {"H", -1}, {"K", -1}});
  const int64_t batch = k.size(0), heads = k.size(1), key_dim = k.size(2);
  check_shape(op, "q", q, {{"B", batch}, {"HQ", -1}, {"K", key_dim}});
  TORCH_CHECK(heads > 0 && q.size(1) % heads == 0, op,
              ": the query heads HQ must be a multiple of the key/value heads H, got HQ = ",
              q.size(1), ", H = ", heads);
  check_shape(op, "v", v, {{"B", batch}, {"H", heads}, {"V", -1}});
  const int64_t value_dim = v.size(2);
  if (gate_on_value) {
    check_shape(op, "g", g, {{"B", batch}, {"H", heads}, {"V", value_dim}});
  } else {
    check_shape(op, "g", g, {{"B", batch}, {"H", heads}, {"K", key_dim}});
  }
  check_shape(op, "state", state, {{"B", batch}, {"H", heads}, {"K", key_dim}, {"V", value_dim}});
  const at::Device device = q.device();
  for (auto [name, tensor] : {std::pair<const char*, const at::Tensor*>{"q", &q}, {"k", &k},
                              {"v", &v}, {"g", &g}, {"state", &state}}) {
    check_floating(op, name, *tensor);
    check_same_device(op, name, *tensor, device);
  }
}

at::ScalarType gla_compute_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& g) {
  const at::ScalarType promoted = c10::promoteTypes(
      c10::promoteTypes(q.scalar_type(), k.scalar_type()),
      c10::promoteTypes(v.scalar_type(), g.scalar_type()));
  return compute_dtype(promoted);
}

}  // namespace lintime::ops
