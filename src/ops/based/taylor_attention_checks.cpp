// Input validation shared by the Taylor linear attention entry points (reference, chunk,
// step): shapes, dtypes, devices, cu_seqlens and eps, with messages that name the tensor and
// the expected shape.
#include "ops/based/taylor_attention.h"

#include "core/tensor_checks.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <utility>

namespace lintime::ops {

int64_t taylor_feature_count(int64_t feature_dim) { return 1 + feature_dim + feature_dim * feature_dim; }

namespace {

void check_eps(const char* op, double eps) {
  TORCH_CHECK(std::isfinite(eps) && eps >= 0.0, op, ": eps must be finite and >= 0, got ", eps);
}

void check_floating_on(const char* op, std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors,
                       const at::Device& device) {
  for (auto [name, tensor] : tensors) {
    check_floating(op, name, *tensor);
    check_same_device(op, name, *tensor, device);
  }
}

}  // namespace

void taylor_attention_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                                   const at::Tensor& v, double eps, const at::Tensor& initial_state,
                                   const at::Tensor& initial_normalizer, const at::Tensor& cu_seqlens) {
  check_shape(op, "k", k, {{"B", -1}, {"T", -1}, {"H", -1}, {"D", -1}});
  const int64_t batch = k.size(0), length = k.size(1), heads = k.size(2), feature_dim = k.size(3);
  TORCH_CHECK(feature_dim > 0, op, ": the feature dim D of q and k must be positive, got k of shape ",
              shape_string(k.sizes()));
  check_shape(op, "q", q, {{"B", batch}, {"T", length}, {"H", heads}, {"D", feature_dim}});
  check_shape(op, "v", v, {{"B", batch}, {"T", length}, {"H", heads}, {"V", -1}});
  check_eps(op, eps);
  check_floating_on(op, {{"q", &q}, {"k", &k}, {"v", &v}}, q.device());
  int64_t sequences = batch;
  if (cu_seqlens.defined()) {
    check_same_device(op, "cu_seqlens", cu_seqlens, q.device());
    sequences = check_cu_seqlens(op, cu_seqlens, batch, length);
  }
  const int64_t features = taylor_feature_count(feature_dim), value_dim = v.size(3);
  TORCH_CHECK(initial_state.defined() == initial_normalizer.defined(), op,
              ": give both initial_state [N, H, E, V] and initial_normalizer [N, H, E] or neither");
  if (initial_state.defined()) {
    check_shape(op, "initial_state", initial_state, {{"N", sequences}, {"H", heads}, {"E", features}, {"V", value_dim}});
    check_shape(op, "initial_normalizer", initial_normalizer, {{"N", sequences}, {"H", heads}, {"E", features}});
    check_floating_on(op, {{"initial_state", &initial_state}, {"initial_normalizer", &initial_normalizer}}, q.device());
  }
}

void taylor_attention_step_check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, double eps, const at::Tensor& state,
                                        const at::Tensor& normalizer) {
  check_shape(op, "k", k, {{"B", -1}, {"H", -1}, {"D", -1}});
  const int64_t batch = k.size(0), heads = k.size(1), feature_dim = k.size(2);
  TORCH_CHECK(feature_dim > 0, op, ": the feature dim D of q and k must be positive, got k of shape ",
              shape_string(k.sizes()));
  check_shape(op, "q", q, {{"B", batch}, {"H", heads}, {"D", feature_dim}});
  check_shape(op, "v", v, {{"B", batch}, {"H", heads}, {"V", -1}});
  check_eps(op, eps);
  const int64_t features = taylor_feature_count(feature_dim);
  check_shape(op, "state", state, {{"B", batch}, {"H", heads}, {"E", features}, {"V", v.size(2)}});
  check_shape(op, "normalizer", normalizer, {{"B", batch}, {"H", heads}, {"E", features}});
  check_floating_on(op, {{"q", &q}, {"k", &k}, {"v", &v}, {"state", &state}, {"normalizer", &normalizer}},
                    q.device());
}

}  // namespace lintime::ops
