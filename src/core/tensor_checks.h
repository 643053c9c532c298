// Shape, dtype and device validation for op bindings. Every failure names the op, the tensor,
// the expected shape with its dimension names and the shape that arrived, e.g.
//   "lintime::gsa_chunk: k must have shape [B, T, H, K] = [2, 64, 4, 32], got [2, 64, 4]".
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace lintime {

struct NamedDim {
  const char* name;
  int64_t size;  // -1: any size
};

// Throws c10::Error (TORCH_CHECK) unless `tensor` is defined and has exactly these dims.
void check_shape(const char* op, const char* tensor_name, const at::Tensor& tensor,
                 std::initializer_list<NamedDim> expected);

// Throws unless `tensor` is floating point (fp16, bf16, fp32, fp64).
void check_floating(const char* op, const char* tensor_name, const at::Tensor& tensor);

// Throws unless `tensor` lives on `device`.
void check_same_device(const char* op, const char* tensor_name, const at::Tensor& tensor,
                       const at::Device& device);

// Validates cu_seqlens: 1-D int32/int64, non-decreasing, starting at 0, ending at total_tokens.
// Returns the number of sequences N. Reads the values on the host (one synchronisation when
// cu_seqlens lives on a GPU).
int64_t check_cu_seqlens(const char* op, const at::Tensor& cu_seqlens, int64_t batch,
                         int64_t total_tokens);
// The checks of check_cu_seqlens that need no values (shape, dtype, batch 1): no host
// synchronisation, for the GPU hot path, which trusts the values as FlashAttention does.
// Returns N.
int64_t check_cu_seqlens_layout(const char* op, const at::Tensor& cu_seqlens, int64_t batch);

// The offsets of cu_seqlens as host integers (a copy to the host: one synchronisation when
// cu_seqlens lives on a GPU).
std::vector<int64_t> sequence_offsets(const at::Tensor& cu_seqlens);

// fp64 inputs compute in fp64; every other floating dtype computes in fp32.
at::ScalarType compute_dtype(at::ScalarType input_dtype);

std::string shape_string(at::IntArrayRef sizes);

}  // namespace lintime
