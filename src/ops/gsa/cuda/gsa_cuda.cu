// Entry points of the GSA CUDA kernels: dispatch on the element type to the launchers that
// gsa_launch_<type>.cu instantiate.
#include "ops/gsa/cuda/gsa_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace lintime::cuda {

template <class E> cudaError_t chunk_forward(const GsaParams&, cudaStream_t);
template <class E> cudaError_t chunk_backward(const GsaParams&, cudaStream_t);
template <class E> cudaError_t recurrent_forward(const GsaParams&, cudaStream_t);
template <class E> size_t chunk_smem_bytes(int);

int padded_slots_for(int slots) {
  if (slots <= 0) return 0;
  if (slots <= 32) return 32;
  if (slots <= 64) return 64;
  if (slots <= 128) return 128;
  return 0;
}

namespace {

template <class F>
auto dispatch_element(ElementType element, F&& f) {
  switch (element) {
    case ElementType::bfloat16: return f(__nv_bfloat16{});
    case ElementType::float16: return f(__half{});
    case ElementType::float32: break;
  }
  return f(float{});
}

}  // namespace

size_t gsa_chunk_smem_bytes(ElementType element, int padded_slots) {
  return dispatch_element(element, [&](auto e) { return chunk_smem_bytes<decltype(e)>(padded_slots); });
}

cudaError_t gsa_chunk_forward(const GsaParams& params, cudaStream_t stream) {
  return dispatch_element(params.element, [&](auto e) { return chunk_forward<decltype(e)>(params, stream); });
}

cudaError_t gsa_chunk_backward(const GsaParams& params, cudaStream_t stream) {
  return dispatch_element(params.element, [&](auto e) { return chunk_backward<decltype(e)>(params, stream); });
}

cudaError_t gsa_recurrent_forward(const GsaParams& params, cudaStream_t stream) {
  return dispatch_element(params.element,
                          [&](auto e) { return recurrent_forward<decltype(e)>(params, stream); });
}

}  // namespace lintime::cuda
