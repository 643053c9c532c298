// Input validation shared by every selective-scan entry point (reference, chunk, step): shapes,
// dtypes and devices, with messages that name the tensor and the expected shape.
#include "ops/ssm/selective_scan.h"

#include "core/tensor_checks.h"

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <utility>

namespace lintime::ops {
namespace {

// A [D, N], D [D] (optional) and the floating-point / device checks of every tensor given.
void check_parameters_and_devices(const char* op, const at::Tensor& A, const at::Tensor& D, int64_t channels,
                                  int64_t state_dim,
                                  std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  check_shape(op, "A", A, {{"D", channels}, {"N", state_dim}});
  if (D.defined()) check_shape(op, "D", D, {{"D", channels}});
  const at::Device device = A.device();
  for (auto [name, tensor] : tensors) {
    if (!tensor->defined()) continue;
    check_floating(op, name, *tensor);
    check_same_device(op, name, *tensor, device);
  }
}

}  // namespace

void selective_scan_check_inputs(const char* op, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                 const at::Tensor& initial_state) {
  check_shape(op, "x", x, {{"batch", -1}, {"T", -1}, {"D", -1}});
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2);
  check_shape(op, "dt", dt, {{"batch", batch}, {"T", length}, {"D", channels}});
  check_shape(op, "B", B, {{"batch", batch}, {"T", length}, {"N", -1}});
  const int64_t state_dim = B.size(2);
  check_shape(op, "C", C, {{"batch", batch}, {"T", length}, {"N", state_dim}});
  if (initial_state.defined()) {
    check_shape(op, "initial_state", initial_state, {{"batch", batch}, {"D", channels}, {"N", state_dim}});
  }
  check_parameters_and_devices(op, A, D, channels, state_dim,
                               {{"x", &x}, {"dt", &dt}, {"A", &A}, {"B", &B}, {"C", &C}, {"D", &D},
                                {"initial_state", &initial_state}});
}

void selective_scan_step_check_inputs(const char* op, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                      const at::Tensor& B, const at::Tensor& C, const at::Tensor& D,
                                      const at::Tensor& state) {
  check_shape(op, "x", x, {{"batch", -1}, {"D", -1}});
  const int64_t batch = x.size(0), channels = x.size(1);
  check_shape(op, "dt", dt, {{"batch", batch}, {"D", channels}});
  check_shape(op, "B", B, {{"batch", batch}, {"N", -1}});
  const int64_t state_dim = B.size(1);
  check_shape(op, "C", C, {{"batch", batch}, {"N", state_dim}});
  check_shape(op, "state", state, {{"batch", batch}, {"D", channels}, {"N", state_dim}});
  check_parameters_and_devices(op, A, D, channels, state_dim,
                               {{"x", &x}, {"dt", &dt}, {"A", &A}, {"B", &B}, {"C", &C}, {"D", &D},
                                {"state", &state}});
}

at::ScalarType selective_scan_compute_dtype(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C) {
  at::ScalarType promoted = x.scalar_type();
  for (const at::Tensor* tensor : {&dt, &A, &B, &C}) promoted = c10::promoteTypes(promoted, tensor->scalar_type());
  return compute_dtype(promoted);
}

}  // namespace lintime::ops
