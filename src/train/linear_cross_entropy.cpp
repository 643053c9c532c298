// Chunked linear cross-entropy: a C++ autograd function whose forward walks the tokens in chunks
// of chunk_tokens, forms each chunk's logits (fp32 from bf16/fp16 when asked), its loss and
// d_logits = (softmax − onehot) / normalizer, and turns d_logits into the chunk's rows of
// d_hidden (in the hidden dtype) and into fp32 sums for d_weight and d_bias before the next
// chunk's logits replace them. The backward only scales those saved gradients by the incoming
// scalar gradient. Plain ATen ops, so it runs wherever ATen does (CPU, CUDA).
#include "train/linear_cross_entropy.h"

#include "core/error.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <optional>

namespace lintime::train {
namespace {

bool is_low_precision(at::ScalarType dtype) { return dtype == at::kBFloat16 || dtype == at::kHalf; }

void check_inputs(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& labels,
                  const LinearCrossEntropyOptions& options) {
  const char* name = "linear_cross_entropy";
  LINTIME_CHECK(hidden.defined() && weight.defined() && labels.defined(), name,
                ": hidden, weight and labels must be defined tensors");
  LINTIME_CHECK(hidden.dim() == 2, name, ": hidden must be [N, D], got ", hidden.sizes());
  LINTIME_CHECK(weight.dim() == 2 && weight.size(1) == hidden.size(1), name, ": weight must be [V, D] with D = ",
                hidden.size(1), " (hidden's last dimension), got ", weight.sizes());
  LINTIME_CHECK(weight.size(0) >= 1, name, ": weight must have at least one vocabulary row, got ", weight.sizes());
  LINTIME_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)), name,
                ": bias must be [V] with V = ", weight.size(0), ", got ", bias.sizes());
  LINTIME_CHECK(labels.dim() == 1 && labels.size(0) == hidden.size(0), name, ": labels must be [N] with N = ",
                hidden.size(0), " (hidden's rows), got ", labels.sizes());
  LINTIME_CHECK(labels.scalar_type() == at::kLong, name, ": labels must be int64, got ", labels.scalar_type());
  for (const at::Tensor* tensor : {&hidden, &weight, &bias}) {
    if (!tensor->defined()) continue;
    LINTIME_CHECK(at::isFloatingType(tensor->scalar_type()), name,
                  ": hidden, weight and bias must be floating point, got ", tensor->scalar_type());
  }
  for (const at::Tensor* tensor : {&weight, &bias, &labels}) {
    if (!tensor->defined()) continue;
    LINTIME_CHECK(tensor->device() == hidden.device(), name, ": every input must be on hidden's device ",
                  hidden.device(), ", got one on ", tensor->device());
  }
  LINTIME_CHECK(options.chunk_tokens >= 1, name, ": chunk_tokens must be >= 1, got ", options.chunk_tokens);
  LINTIME_CHECK(std::isfinite(options.normalizer) && options.normalizer >= 0, name,
                ": normalizer must be a finite number >= 0 (0: the number of targets), got ", options.normalizer);

  // Labels in range (one host synchronisation per call; the failing label is looked up only then).
  const int64_t vocabulary = weight.size(0);
  const at::Tensor out_of_range =
      labels.ne(options.ignore_index).logical_and(labels.lt(0).logical_or(labels.ge(vocabulary)));  // [N]
  if (labels.numel() > 0 && out_of_range.any().item<bool>()) {
    const int64_t token = out_of_range.nonzero().select(1, 0)[0].item<int64_t>();
    fail(name, ": label ", labels[token].item<int64_t>(), " at token ", token, " is outside the vocabulary [0, ",
         vocabulary, ") and is not ignore_index ", options.ignore_index);
  }
}

// The dtype of the logits, the softmax and the loss sum.
at::ScalarType logits_dtype_of(const at::Tensor& hidden, const LinearCrossEntropyOptions& options) {
  if (hidden.scalar_type() == at::kDouble) return at::kDouble;
  return options.logits_in_fp32 ? at::kFloat : hidden.scalar_type();
}

// 1 / normalizer as a 0-dim tensor of `dtype` on hidden's device (no host synchronisation): the
// explicit normalizer, or the number of targets (at least 1, so that all-ignored gives 0).
at::Tensor inverse_normalizer(const at::Tensor& labels, const LinearCrossEntropyOptions& options,
                              at::ScalarType dtype) {
  const at::TensorOptions tensor_options = labels.options().dtype(dtype);
  if (options.normalizer > 0) return at::full({}, 1.0 / options.normalizer, tensor_options);
  return labels.ne(options.ignore_index).sum().clamp_min(1).to(dtype).reciprocal();
}

struct ChunkedResult {
  at::Tensor loss;         // [] float64 or float32
  at::Tensor grad_hidden;  // [N, D] in hidden's dtype, or undefined
  at::Tensor grad_weight;  // [V, D] float32 (float64 for float64 inputs), or undefined
  at::Tensor grad_bias;    // [V] likewise, or undefined
};

// The chunked forward, forming the gradients asked for. Runs without autograd recording.
ChunkedResult chunked_forward(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& labels, const LinearCrossEntropyOptions& options,
                              bool want_hidden, bool want_weight, bool want_bias) {
  const at::NoGradGuard no_grad;
  const int64_t tokens = hidden.size(0);
  const int64_t dim = hidden.size(1);
  const int64_t vocabulary = weight.size(0);
  const at::ScalarType input_dtype = hidden.scalar_type();
  const at::ScalarType logits_dtype = logits_dtype_of(hidden, options);
  const at::ScalarType sum_dtype = logits_dtype == at::kDouble ? at::kDouble : at::kFloat;
  // CUDA multiplies bf16/fp16 matrices into an fp32 result directly (aten::mm.dtype); elsewhere
  // the operands are cast to the logits dtype (the weight once, the hidden rows per chunk).
  const bool mixed_matmul = hidden.is_cuda() && is_low_precision(input_dtype) && logits_dtype == at::kFloat;
  const at::ScalarType operand_dtype = mixed_matmul ? input_dtype : logits_dtype;
  const at::Tensor weight_operand = weight.to(operand_dtype);  // [V, D]
  const at::Tensor bias_operand = bias.defined() ? bias.to(logits_dtype) : at::Tensor();  // [V]
  auto multiply = [&](const at::Tensor& a, const at::Tensor& b) {  // a @ b in the logits dtype
    return mixed_matmul ? at::mm(a, b, at::kFloat) : at::mm(a.to(operand_dtype), b.to(operand_dtype));
  };

  const bool any_gradient = want_hidden || want_weight || want_bias;
  const at::Tensor inverse = inverse_normalizer(labels, options, logits_dtype);
  at::Tensor loss_sum = at::zeros({}, hidden.options().dtype(sum_dtype));
  ChunkedResult result;
  if (want_hidden) result.grad_hidden = at::empty({tokens, dim}, hidden.options());
  if (want_weight) result.grad_weight = at::zeros({vocabulary, dim}, hidden.options().dtype(sum_dtype));
  if (want_bias) result.grad_bias = at::zeros({vocabulary}, hidden.options().dtype(sum_dtype));

  for (int64_t start = 0; start < tokens; start += options.chunk_tokens) {
    const int64_t rows = std::min(options.chunk_tokens, tokens - start);
    const at::Tensor hidden_chunk = hidden.narrow(0, start, rows);  // [n, D]
    const at::Tensor label_chunk = labels.narrow(0, start, rows);   // [n]
    const at::Tensor counted = label_chunk.ne(options.ignore_index);  // [n]
    const at::Tensor safe_labels = label_chunk.masked_fill(counted.logical_not(), 0).unsqueeze(1);  // [n, 1]

    at::Tensor log_probabilities;  // [n, V]: one log_softmax kernel (logsumexp took five passes)
    {
      at::Tensor logits = multiply(hidden_chunk, weight_operand.t());  // [n, V]
      if (bias_operand.defined()) logits.add_(bias_operand);
      log_probabilities = at::log_softmax(logits, 1);
    }
    const at::Tensor counted_weight = counted.to(logits_dtype).unsqueeze(1);  // [n, 1]
    loss_sum.sub_((log_probabilities.gather(1, safe_labels) * counted_weight).to(sum_dtype).sum());
    if (!any_gradient) continue;

    // d_logits = (softmax − onehot(label)) / normalizer, zero rows for ignored tokens; formed in
    // place of the log-probabilities, and scaled straight into the operand dtype.
    at::Tensor grad_logits = log_probabilities.exp_();  // [n, V] softmax
    grad_logits.scatter_add_(1, safe_labels, counted_weight.neg());
    const at::Tensor row_scale = counted_weight * inverse;  // [n, 1]
    at::Tensor grad_operand;  // [n, V]
    if (operand_dtype == logits_dtype) {
      grad_operand = grad_logits.mul_(row_scale);
    } else {  // the bf16/fp16 operand of the CUDA products; grad_logits stays unscaled
      grad_operand = at::empty(grad_logits.sizes(), grad_logits.options().dtype(operand_dtype));
      at::mul_out(grad_operand, grad_logits, row_scale);
    }
    if (want_hidden) result.grad_hidden.narrow(0, start, rows).copy_(at::mm(grad_operand, weight_operand));
    if (want_weight) {
      if (mixed_matmul) {  // accumulated by the GEMM itself (beta 1), fp32 from bf16/fp16 operands
        at::addmm_out(result.grad_weight, result.grad_weight, grad_operand.t(), hidden_chunk, at::kFloat);
      } else {
        result.grad_weight.addmm_(grad_logits.t().to(sum_dtype), hidden_chunk.to(sum_dtype));
      }
    }
    if (want_bias) {
      const at::Tensor scaled = operand_dtype == logits_dtype ? grad_logits : grad_logits * row_scale;
      result.grad_bias.add_(scaled.sum(0, /*keepdim=*/false, sum_dtype));
    }
  }
  result.loss = loss_sum * inverse.to(sum_dtype);
  return result;
}

class LinearCrossEntropyFunction : public torch::autograd::Function<LinearCrossEntropyFunction> {
 public:
  // bias travels as an optional: autograd takes a std::nullopt as no input, an undefined tensor not.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                            const std::optional<at::Tensor>& optional_bias, const at::Tensor& labels,
                            const LinearCrossEntropyOptions& options) {
    const at::Tensor bias = optional_bias.value_or(at::Tensor());
    ChunkedResult result = chunked_forward(hidden, weight, bias, labels, options, hidden.requires_grad(),
                                           weight.requires_grad(), bias.defined() && bias.requires_grad());
    ctx->saved_data["grad_hidden"] = result.grad_hidden;
    ctx->saved_data["grad_weight"] = result.grad_weight;
    ctx->saved_data["grad_bias"] = result.grad_bias;
    ctx->saved_data["weight_dtype"] = weight.scalar_type();
    ctx->saved_data["bias_dtype"] = bias.defined() ? bias.scalar_type() : weight.scalar_type();
    return result.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor& grad_loss = grad_outputs[0];  // []
    auto scaled = [&](const char* key, std::optional<at::ScalarType> dtype) {
      const at::Tensor gradient = ctx->saved_data[key].toTensor();
      if (!gradient.defined()) return at::Tensor();
      const at::ScalarType target = dtype.value_or(gradient.scalar_type());
      return (gradient * grad_loss.to(gradient.scalar_type())).to(target);
    };
    return {scaled("grad_hidden", std::nullopt),
            scaled("grad_weight", ctx->saved_data["weight_dtype"].toScalarType()),
            scaled("grad_bias", ctx->saved_data["bias_dtype"].toScalarType()),
            at::Tensor(),    // labels
            at::Tensor()};   // options
  }
};

}  // namespace

at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
                                const at::Tensor& labels, const LinearCrossEntropyOptions& options) {
  check_inputs(hidden, weight, bias, labels, options);
  const bool records = at::GradMode::is_enabled() &&
                       (hidden.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  if (!records) return chunked_forward(hidden, weight, bias, labels, options, false, false, false).loss;
  const std::optional<at::Tensor> optional_bias = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  return LinearCrossEntropyFunction::apply(hidden, weight, optional_bias, labels, options);
}

at::Tensor linear_cross_entropy_reference(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
                                          const at::Tensor& labels, const LinearCrossEntropyOptions& options) {
  check_inputs(hidden, weight, bias, labels, options);
  const at::ScalarType logits_dtype = logits_dtype_of(hidden, options);
  const at::ScalarType loss_dtype = logits_dtype == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor logits = at::linear(hidden.to(logits_dtype), weight.to(logits_dtype),
                                       bias.defined() ? bias.to(logits_dtype) : at::Tensor());  // [N, V]
  const at::Tensor loss_sum = at::cross_entropy_loss(logits, labels, /*weight=*/{}, at::Reduction::Sum,
                                                     options.ignore_index);
  return loss_sum.to(loss_dtype) * inverse_normalizer(labels, options, loss_dtype);
}

}  // namespace lintime::train
