// Implementation of the op-binding checks declared in tensor_checks.h.
#include "core/tensor_checks.h"

#include <c10/util/Exception.h>

#include <sstream>

namespace lintime {

std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << "]";
  return out.str();
}

void check_shape(const char* op, const char* tensor_name, const at::Tensor& tensor,
                 std::initializer_list<NamedDim> expected) {
  std::ostringstream names, sizes;
  names << "[";
  sizes << "[";
  size_t i = 0;
  for (const auto& dim : expected) {
    names << (i ? ", " : "") << dim.name;
    sizes << (i ? ", " : "");
    if (dim.size < 0) sizes << dim.name; else sizes << dim.size;
    ++i;
  }
  names << "]";
  sizes << "]";
  TORCH_CHECK(tensor.defined(), op, ": ", tensor_name, " is missing; expected shape ", names.str());
  bool matches = tensor.dim() == static_cast<int64_t>(expected.size());
  if (matches) {
    i = 0;
    for (const auto& dim : expected) {
      if (dim.size >= 0 && tensor.size(static_cast<int64_t>(i)) != dim.size) matches = false;
      ++i;
    }
  }
  TORCH_CHECK(matches, op, ": ", tensor_name, " must have shape ", names.str(), " = ", sizes.str(),
              ", got ", shape_string(tensor.sizes()));
}

void check_floating(const char* op, const char* tensor_name, const at::Tensor& tensor) {
  TORCH_CHECK(at::isFloatingType(tensor.scalar_type()), op, ": ", tensor_name,
              " must be floating point (float16, bfloat16, float32 or float64), got ",
              tensor.scalar_type());
}

void check_same_device(const char* op, const char* tensor_name, const at::Tensor& tensor,
                       const at::Device& device) {
  TORCH_CHECK(tensor.device() == device, op, ": ", tensor_name, " is on ", tensor.device(),
              " but the inputs are on ", device);
}

int64_t check_cu_seqlens_layout(const char* op, const at::Tensor& cu_seqlens, int64_t batch) {
  TORCH_CHECK(cu_seqlens.dim() == 1 && cu_seqlens.size(0) >= 2, op,
              ": cu_seqlens must have shape [N + 1] with N >= 1, got ",
              shape_string(cu_seqlens.sizes()));
  TORCH_CHECK(cu_seqlens.scalar_type() == at::kInt || cu_seqlens.scalar_type() == at::kLong, op,
              ": cu_seqlens must be int32 or int64, got ", cu_seqlens.scalar_type());
  TORCH_CHECK(batch == 1, op, ": with cu_seqlens the batch size must be 1 (sequences packed along T), got B = ",
              batch);
  return cu_seqlens.size(0) - 1;
}

int64_t check_cu_seqlens(const char* op, const at::Tensor& cu_seqlens, int64_t batch,
                         int64_t total_tokens) {
  check_cu_seqlens_layout(op, cu_seqlens, batch);
  const std::vector<int64_t> offsets = sequence_offsets(cu_seqlens);
  const auto count = static_cast<int64_t>(offsets.size());
  TORCH_CHECK(offsets[0] == 0, op, ": cu_seqlens must start at 0, got ", offsets[0]);
  for (int64_t i = 1; i < count; ++i) {
    TORCH_CHECK(offsets[i] >= offsets[i - 1], op, ": cu_seqlens must be non-decreasing, got ",
                offsets[i - 1], " then ", offsets[i], " at index ", i);
  }
  TORCH_CHECK(offsets[count - 1] == total_tokens, op, ": cu_seqlens must end at T = ", total_tokens,
              ", got ", offsets[count - 1]);
  return count - 1;
}

std::vector<int64_t> sequence_offsets(const at::Tensor& cu_seqlens) {
  const at::Tensor host = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
}

at::ScalarType compute_dtype(at::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace lintime
