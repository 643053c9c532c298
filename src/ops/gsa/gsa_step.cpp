// GSA decoding step (gsa.md §1): one token updates both states, H^k [B,H,K,M] and
// H^v [B,H,M,V], and returns o [B,HQ,V]. Computes in the states' precision (fp32, fp64 for
// fp64 inputs); the functional form copies the states first. (gsa_step itself is the dispatcher
// call in ops.cpp, which lands on gsa_step_functional: see gsa.h.)
#include "ops/gsa/gsa.h"

#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <vector>

namespace lintime::ops {

void gsa_step_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, const at::Tensor& s, const at::Tensor& g,
                       const at::Tensor& state_k, const at::Tensor& state_v) {
  check_shape(op, "q", q, {{"B", -1}, {"HQ", -1}, {"K", -1}});
  const int64_t batch = q.size(0), query_heads = q.size(1), key_dim = q.size(2);
  check_shape(op, "k", k, {{"B", batch}, {"H", -1}, {"K", key_dim}});
  const int64_t heads = k.size(1);
  TORCH_CHECK(heads > 0 && query_heads % heads == 0, op, ": the query heads HQ = ", query_heads,
              " (q [B, HQ, K]) must be a multiple of the key/value heads H = ", heads,
              " (k [B, H, K])");
  check_shape(op, "v", v, {{"B", batch}, {"H", heads}, {"V", -1}});
  check_shape(op, "s", s, {{"B", batch}, {"H", heads}, {"M", -1}});
  const int64_t slots = s.size(2), value_dim = v.size(2);
  check_shape(op, "g", g, {{"B", batch}, {"H", heads}, {"M", slots}});
  check_shape(op, "state_k", state_k, {{"B", batch}, {"H", heads}, {"K", key_dim}, {"M", slots}});
  check_shape(op, "state_v", state_v, {{"B", batch}, {"H", heads}, {"M", slots}, {"V", value_dim}});
  const at::Device device = q.device();
  for (const auto& [name, tensor] :
       {std::pair<const char*, const at::Tensor&>{"q", q}, {"k", k}, {"v", v}, {"s", s}, {"g", g},
        {"state_k", state_k}, {"state_v", state_v}}) {
    check_floating(op, name, tensor);
    check_same_device(op, name, tensor, device);
  }
}

namespace {

// Updates the states in place and returns o [B, HQ, V] in q's dtype.
at::Tensor step_states(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& s, const at::Tensor& g, double scale,
                       at::Tensor& state_k, at::Tensor& state_v) {
  const int64_t batch = q.size(0), query_heads = q.size(1), key_dim = q.size(2);
  const int64_t heads = k.size(1), value_dim = v.size(2);
  const auto options = q.options().dtype(compute_dtype(q.scalar_type()));
  const auto write = s.to(options);      // [B, H, M]
  const auto decay = g.to(options).exp();  // [B, H, M]
  state_k.mul_(decay.unsqueeze(2)).add_(k.to(options).unsqueeze(3) * write.unsqueeze(2));
  state_v.mul_(decay.unsqueeze(3)).add_(write.unsqueeze(3) * v.to(options).unsqueeze(2));
  const auto query = q.to(options).reshape({batch, heads, query_heads / heads, key_dim});
  const auto slot_scores = at::matmul(query, state_k.to(options)) * scale;  // [B, H, G, M]
  const auto slot_weights = at::softmax(slot_scores, -1);
  return at::matmul(slot_weights, state_v.to(options))  // [B, H, G, V]
      .reshape({batch, query_heads, value_dim})
      .to(q.scalar_type());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> gsa_step_functional(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& s,
    const at::Tensor& g, double scale, const at::Tensor& state_k, const at::Tensor& state_v) {
  gsa_step_check_inputs("lintime::gsa_step", q, k, v, s, g, state_k, state_v);
  const auto dtype = compute_dtype(q.scalar_type());
  auto new_state_k = state_k.to(dtype, /*non_blocking=*/false, /*copy=*/true);
  auto new_state_v = state_v.to(dtype, /*non_blocking=*/false, /*copy=*/true);
  auto o = step_states(q, k, v, s, g, scale, new_state_k, new_state_v);
  return {o, new_state_k, new_state_v};
}

at::Tensor gsa_step_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& s, const at::Tensor& g, double scale,
                            at::Tensor& state_k, at::Tensor& state_v) {
  gsa_step_check_inputs("lintime::gsa_step_", q, k, v, s, g, state_k, state_v);
  return step_states(q, k, v, s, g, scale, state_k, state_v);
}

void gsa_step_rows_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& s, const at::Tensor& g, const at::Tensor& state_k,
                                const at::Tensor& state_v, const at::Tensor& rows) {
  check_shape(op, "rows", rows, {{"B", q.dim() == 3 ? q.size(0) : -1}});
  TORCH_CHECK(rows.scalar_type() == at::kLong, op, ": rows must be int64, got ", rows.scalar_type());
  check_same_device(op, "rows", rows, q.device());
  if (k.dim() == 3 && v.dim() == 3 && s.dim() == 3) {  // else the step's own checks name what is wrong
    check_shape(op, "state_k", state_k, {{"S", -1}, {"H", k.size(1)}, {"K", k.size(2)}, {"M", s.size(2)}});
    check_shape(op, "state_v", state_v, {{"S", state_k.size(0)}, {"H", k.size(1)}, {"M", s.size(2)}, {"V", v.size(2)}});
  }
  // The rows' states as the one-token step checks them: [B, ...] views of row 0 stand in.
  const int64_t batch = q.dim() == 3 ? q.size(0) : 0;
  TORCH_CHECK(state_k.size(0) == state_v.size(0) && state_k.size(0) > 0, op,
              ": state_k and state_v must hold the same rows S > 0, got ", state_k.size(0), " and ", state_v.size(0));
  if (rows.is_cpu()) {  // on a device the kernel checks the range; reading them here would wait for it
    std::vector<bool> seen(static_cast<size_t>(state_k.size(0)), false);
    const at::Tensor values = rows.contiguous();
    for (int64_t i = 0; i < values.numel(); ++i) {
      const int64_t row = values.data_ptr<int64_t>()[i];
      TORCH_CHECK(row >= 0 && row < state_k.size(0) && !seen[static_cast<size_t>(row)], op,
                  ": rows must be distinct rows of the states in [0, ", state_k.size(0), "), got ", row);
      seen[static_cast<size_t>(row)] = true;
    }
  }
  gsa_step_check_inputs(op, q, k, v, s, g, state_k.narrow(0, 0, 1).expand({batch, -1, -1, -1}),
                        state_v.narrow(0, 0, 1).expand({batch, -1, -1, -1}));
}

at::Tensor gsa_step_rows_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& s, const at::Tensor& g, double scale,
                                 at::Tensor& state_k, at::Tensor& state_v, const at::Tensor& rows) {
  gsa_step_rows_check_inputs("lintime::gsa_step_rows_", q, k, v, s, g, state_k, state_v, rows);
  at::Tensor part_k = state_k.index_select(0, rows).to(compute_dtype(q.scalar_type()));
  at::Tensor part_v = state_v.index_select(0, rows).to(compute_dtype(q.scalar_type()));
  at::Tensor o = step_states(q, k, v, s, g, scale, part_k, part_v);
  state_k.index_copy_(0, rows, part_k.to(state_k.scalar_type()));
  state_v.index_copy_(0, rows, part_v.to(state_v.scalar_type()));
  return o;
}

}  // namespace lintime::ops
