// Causal depthwise convolution as W shifted multiply-adds over a history-padded input: the
// kernels are tiny (W = 4), so this is as fast as a conv call and handles the decode history
// and varlen masking in the same few lines.
#include "layers/short_convolution.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

namespace lintime::layers {

ShortConvolution::ShortConvolution(int64_t hidden_size, int64_t kernel_size, double std,
                                   at::Generator& generator, bool bias, const std::string& activation)
    : hidden_size_(hidden_size), kernel_size_(kernel_size) {
  LINTIME_CHECK(hidden_size > 0, "ShortConvolution: hidden_size must be positive, got ", hidden_size);
  LINTIME_CHECK(kernel_size >= 1, "ShortConvolution: kernel_size (conv_size) must be >= 1, got ", kernel_size);
  LINTIME_CHECK(activation == "silu" || activation == "swish" || activation.empty(),
                "ShortConvolution: activation must be \"silu\", \"swish\" or empty, got \"", activation, "\"");
  silu_ = !activation.empty();
  weight = at::empty({hidden_size, 1, kernel_size}, at::kFloat);
  weight.normal_(0.0, std, generator);
  register_parameter("weight", weight);
  if (bias) {
    this->bias = at::zeros({hidden_size}, at::kFloat);
    register_parameter("bias", this->bias);
  }
}

at::Tensor ShortConvolution::forward(const at::Tensor& x, at::Tensor* conv_state,
                                     const std::optional<at::Tensor>& cu_seqlens) const {
  const char* op = "ShortConvolution";
  check_shape(op, "x", x, {{"B", -1}, {"T", -1}, {"D", hidden_size_}});
  const int64_t batch = x.size(0), length = x.size(1), history = kernel_size_ - 1;
  const auto compute = compute_dtype(x.scalar_type());
  at::Tensor x_compute = x.to(compute);

  at::Tensor past;  // [B, W-1, D]
  if (conv_state != nullptr) {
    check_shape(op, "conv_state", *conv_state, {{"B", batch}, {"W-1", history}, {"D", hidden_size_}});
    TORCH_CHECK(!cu_seqlens.has_value(), "ShortConvolution: cu_seqlens with a conv state is not supported");
    past = conv_state->to(compute);
  } else {
    past = at::zeros({batch, history, hidden_size_}, x_compute.options());
  }
  at::Tensor padded = at::cat({past, x_compute}, 1);  // [B, W-1+T, D]

  // Position of each token inside its packed sequence: tap j (offset W-1-j back) is valid
  // only where position >= W-1-j.
  at::Tensor position;  // [1, T, 1]
  if (cu_seqlens.has_value()) {
    const int64_t sequences = check_cu_seqlens(op, *cu_seqlens, batch, length);
    (void)sequences;
    at::Tensor starts = cu_seqlens->to(x.device(), at::kLong);
    at::Tensor t = at::arange(length, at::TensorOptions().dtype(at::kLong).device(x.device()));
    at::Tensor sequence = at::searchsorted(starts, t, /*out_int32=*/false, /*right=*/true) - 1;
    position = (t - starts.index_select(0, sequence)).view({1, length, 1});
  }

  at::Tensor w = weight.to(compute).view({hidden_size_, kernel_size_});  // [D, W]
  at::Tensor y = bias.defined() ? bias.to(compute).expand({batch, length, hidden_size_}).clone()
                                : at::zeros({batch, length, hidden_size_}, x_compute.options());
  for (int64_t j = 0; j < kernel_size_; ++j) {
    at::Tensor term = padded.narrow(1, j, length) * w.select(1, j);
    if (position.defined()) term = term * (position >= (history - j)).to(compute);
    y = y + term;
  }
  if (silu_) y = at::silu(y);

  if (conv_state != nullptr && history > 0) {
    conv_state->copy_(padded.narrow(1, length, history).detach());
  }
  return y.to(x.scalar_type());
}

}  // namespace lintime::layers
