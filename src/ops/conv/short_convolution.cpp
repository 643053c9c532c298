// Short causal depthwise convolution: checks, the shift-and-add form, the conv1d reference and
// the one-token step (see the header). The kernels are tiny (W ≤ 4 in BASED and fla), so W
// multiply-adds over a history-padded input are as fast as a conv call and handle the decode
// history and the varlen masking in the same few lines. Varlen without states reads cu_seqlens
// only on the device; with states, sequence by sequence (cu_seqlens read on the host).
#include "ops/conv/short_convolution.h"

#include "core/error.h"
#include "core/tensor_checks.h"

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace lintime::ops {

void short_convolution_check_inputs(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& bias, const at::Tensor& initial_state,
                                    const at::Tensor& cu_seqlens) {
  check_shape(op, "x", x, {{"B", -1}, {"T", -1}, {"D", -1}});
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2);
  check_shape(op, "weight", weight, {{"D", channels}, {"1", 1}, {"W", -1}});
  LINTIME_CHECK(weight.size(2) >= 1, op, ": weight must have at least one tap (W >= 1), got ", weight.sizes());
  check_floating(op, "x", x);
  check_floating(op, "weight", weight);
  check_same_device(op, "weight", weight, x.device());
  if (bias.defined()) {
    check_shape(op, "bias", bias, {{"D", channels}});
    check_same_device(op, "bias", bias, x.device());
  }
  int64_t sequences = batch;
  if (cu_seqlens.defined()) {
    check_same_device(op, "cu_seqlens", cu_seqlens, x.device());
    sequences = check_cu_seqlens(op, cu_seqlens, batch, length);
  }
  if (initial_state.defined()) {
    check_shape(op, "initial_state", initial_state, {{"N", sequences}, {"W-1", weight.size(2) - 1}, {"D", channels}});
    check_same_device(op, "initial_state", initial_state, x.device());
  }
}

namespace {

at::Tensor activate(const at::Tensor& y, bool silu) { return silu ? at::silu(y) : y; }

// [first, last) token ranges of the sequences.
std::vector<std::pair<int64_t, int64_t>> sequence_ranges(const at::Tensor& cu_seqlens, int64_t batch, int64_t length) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  if (!cu_seqlens.defined()) {
    for (int64_t b = 0; b < batch; ++b) ranges.emplace_back(b, b);  // unused bounds: whole rows
    return ranges;
  }
  const at::Tensor offsets = cu_seqlens.to(at::kCPU, at::kLong);
  for (int64_t n = 0; n + 1 < offsets.size(0); ++n) {
    ranges.emplace_back(offsets[n].item<int64_t>(), offsets[n + 1].item<int64_t>());
  }
  (void)length;
  return ranges;
}

}  // namespace

ShortConvolutionOutputs short_convolution_fwd(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                              bool silu, const at::Tensor& initial_state, bool output_final_state,
                                              const at::Tensor& cu_seqlens) {
  const char* op = "lintime::short_convolution";
  short_convolution_check_inputs(op, x, weight, bias, initial_state, cu_seqlens);
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2), taps = weight.size(2);
  const int64_t history = taps - 1;
  const auto compute = compute_dtype(x.scalar_type());
  const at::Tensor xc = x.to(compute);
  const at::Tensor w = weight.to(compute).view({channels, taps});  // [D, W]

  if (cu_seqlens.defined() && !initial_state.defined() && !output_final_state) {
    // Packed sequences from zero histories, without reading cu_seqlens on the host: tap j (the
    // input W − 1 − j tokens back) counts only where the token is at least that far into its
    // sequence.
    const at::Tensor starts = cu_seqlens.to(x.device(), at::kLong);
    const at::Tensor t = at::arange(length, at::TensorOptions().dtype(at::kLong).device(x.device()));
    const at::Tensor sequence = at::searchsorted(starts, t, /*out_int32=*/false, /*right=*/true) - 1;
    const at::Tensor position = (t - starts.index_select(0, sequence)).view({1, length, 1});
    const at::Tensor padded = at::cat({at::zeros({batch, history, channels}, xc.options()), xc}, 1);
    at::Tensor y = bias.defined() ? bias.to(compute).expand({batch, length, channels}) : at::zeros_like(xc);
    for (int64_t j = 0; j < taps; ++j) {
      y = y + padded.narrow(1, j, length) * w.select(1, j) * (position >= (history - j)).to(compute);
    }
    return {activate(y, silu).to(x.scalar_type()), at::Tensor()};
  }
  if (cu_seqlens.defined()) {
    // With initial or final states, each packed sequence on its own (cu_seqlens read on the
    // host): its history is its own initial state.
    std::vector<at::Tensor> outputs, finals;
    const auto ranges = sequence_ranges(cu_seqlens, batch, length);
    for (size_t n = 0; n < ranges.size(); ++n) {
      const auto [first, last] = ranges[n];
      const at::Tensor initial = initial_state.defined() ? initial_state.narrow(0, static_cast<int64_t>(n), 1) : at::Tensor();
      auto [y, final_state] = short_convolution_fwd(x.narrow(1, first, last - first), weight, bias, silu, initial,
                                                    output_final_state, at::Tensor());
      outputs.push_back(y);
      if (output_final_state) finals.push_back(final_state);
    }
    return {at::cat(outputs, 1), output_final_state ? at::cat(finals, 0) : at::Tensor()};
  }

  const at::Tensor past = initial_state.defined() ? initial_state.to(compute)
                                                  : at::zeros({batch, history, channels}, xc.options());
  const at::Tensor padded = at::cat({past, xc}, 1);  // [B, W − 1 + T, D]
  at::Tensor y = bias.defined() ? bias.to(compute).expand({batch, length, channels}) : at::zeros_like(xc);
  for (int64_t j = 0; j < taps; ++j) y = y + padded.narrow(1, j, length) * w.select(1, j);
  at::Tensor final_state;
  if (output_final_state) final_state = padded.narrow(1, length, history).to(x.scalar_type());
  return {activate(y, silu).to(x.scalar_type()), final_state};
}

ShortConvolutionOutputs short_convolution_reference_fwd(const at::Tensor& x, const at::Tensor& weight,
                                                        const at::Tensor& bias, bool silu,
                                                        const at::Tensor& initial_state, bool output_final_state,
                                                        const at::Tensor& cu_seqlens) {
  const char* op = "lintime::short_convolution_reference";
  short_convolution_check_inputs(op, x, weight, bias, initial_state, cu_seqlens);
  const int64_t batch = x.size(0), length = x.size(1), channels = x.size(2), taps = weight.size(2);
  const auto compute = compute_dtype(x.scalar_type());
  std::vector<at::Tensor> outputs, finals;
  const bool varlen = cu_seqlens.defined();
  const auto ranges = sequence_ranges(cu_seqlens, batch, length);
  for (size_t n = 0; n < ranges.size(); ++n) {
    const auto [first, last] = ranges[n];
    const at::Tensor sequence = varlen ? x.narrow(1, first, last - first).squeeze(0)
                                       : x.select(0, static_cast<int64_t>(n));  // [L, D]
    const int64_t n_tokens = sequence.size(0);
    const at::Tensor past = initial_state.defined() ? initial_state.select(0, static_cast<int64_t>(n)).to(compute)
                                                    : at::zeros({taps - 1, channels}, x.options().dtype(compute));
    const at::Tensor inputs = at::cat({past, sequence.to(compute)}, 0);  // [W − 1 + L, D]
    // conv1d correlates: output t = Σ_j w[:, j] · input[t + j], i.e. taps oldest first.
    const std::optional<at::Tensor> b = bias.defined() ? std::optional<at::Tensor>(bias.to(compute)) : std::nullopt;
    if (n_tokens == 0) {  // conv1d takes no input shorter than its kernel
      outputs.push_back(at::zeros({1, 0, channels}, x.options().dtype(compute)));
    } else {
      at::Tensor y = at::conv1d(inputs.t().unsqueeze(0), weight.to(compute), b, /*stride=*/at::IntArrayRef{1},
                                /*padding=*/at::IntArrayRef{0}, /*dilation=*/at::IntArrayRef{1}, channels);  // [1, D, L]
      outputs.push_back(activate(y.squeeze(0).t(), silu).unsqueeze(0));
    }
    if (output_final_state) finals.push_back(inputs.narrow(0, n_tokens, taps - 1).unsqueeze(0));
  }
  at::Tensor y = varlen ? at::cat(outputs, 1) : at::cat(outputs, 0);
  return {y.to(x.scalar_type()), output_final_state ? at::cat(finals, 0).to(x.scalar_type()) : at::Tensor()};
}

at::Tensor short_convolution_step_inplace(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                          bool silu, at::Tensor& state) {
  const char* op = "lintime::short_convolution_step_";
  check_shape(op, "x", x, {{"B", -1}, {"D", -1}});
  short_convolution_check_inputs(op, x.unsqueeze(1), weight, bias, state, at::Tensor());
  auto [y, final_state] = short_convolution_fwd(x.unsqueeze(1), weight, bias, silu, state, true, at::Tensor());
  state.copy_(final_state);
  return y.squeeze(1);
}

}  // namespace lintime::ops
