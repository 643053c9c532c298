// Input validation shared by every GSA entry point (gsa.md §1 op contract): shapes with their
// dimension names, dtypes, devices, cu_seqlens and both initial states.
#include "ops/gsa/gsa.h"

#include "core/tensor_checks.h"

#include <c10/util/Exception.h>

namespace lintime::ops {

void gsa_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& s, const at::Tensor& g,
                      const at::Tensor& initial_state_k, const at::Tensor& initial_state_v,
                      const at::Tensor& cu_seqlens, bool read_cu_seqlens) {
  check_shape(op, "q", q, {{"B", -1}, {"T", -1}, {"HQ", -1}, {"K", -1}});
  const int64_t batch = q.size(0), time = q.size(1), query_heads = q.size(2), key_dim = q.size(3);
  check_shape(op, "k", k, {{"B", batch}, {"T", time}, {"H", -1}, {"K", key_dim}});
  const int64_t heads = k.size(2);
  TORCH_CHECK(heads > 0 && query_heads % heads == 0, op, ": the query heads HQ = ", query_heads,
              " (q [B, T, HQ, K]) must be a multiple of the key/value heads H = ", heads,
              " (k [B, T, H, K])");
  check_shape(op, "v", v, {{"B", batch}, {"T", time}, {"H", heads}, {"V", -1}});
  check_shape(op, "s", s, {{"B", batch}, {"T", time}, {"H", heads}, {"M", -1}});
  const int64_t slots = s.size(3), value_dim = v.size(3);
  if (g.defined()) check_shape(op, "g", g, {{"B", batch}, {"T", time}, {"H", heads}, {"M", slots}});

  check_floating(op, "q", q);
  auto check_dtype_of_q = [&](const char* name, const at::Tensor& tensor) {
    TORCH_CHECK(tensor.scalar_type() == q.scalar_type(), op, ": ", name, " must have q's dtype ",
                q.scalar_type(), ", got ", tensor.scalar_type());
  };
  check_dtype_of_q("k", k);
  check_dtype_of_q("v", v);
  check_dtype_of_q("s", s);
  const at::Device device = q.device();
  check_same_device(op, "k", k, device);
  check_same_device(op, "v", v, device);
  check_same_device(op, "s", s, device);
  if (g.defined()) {
    check_floating(op, "g", g);
    check_same_device(op, "g", g, device);
  }

  int64_t sequences = batch;
  if (cu_seqlens.defined()) {
    sequences = read_cu_seqlens ? check_cu_seqlens(op, cu_seqlens, batch, time)
                                : check_cu_seqlens_layout(op, cu_seqlens, batch);
  }
  if (initial_state_k.defined()) {
    check_shape(op, "initial_state_k", initial_state_k,
                {{"N", sequences}, {"H", heads}, {"K", key_dim}, {"M", slots}});
    check_floating(op, "initial_state_k", initial_state_k);
    check_same_device(op, "initial_state_k", initial_state_k, device);
  }
  if (initial_state_v.defined()) {
    check_shape(op, "initial_state_v", initial_state_v,
                {{"N", sequences}, {"H", heads}, {"M", slots}, {"V", value_dim}});
    check_floating(op, "initial_state_v", initial_state_v);
    check_same_device(op, "initial_state_v", initial_state_v, device);
  }
}

}  // namespace lintime::ops
