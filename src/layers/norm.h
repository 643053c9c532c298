// What the decoder stack needs of a normalisation layer, whichever it is (RMSNorm: fla, Hugging
// Face, BASED; LayerNorm: zoology's MQAR model): the norm of x, and of x + residual together
// with the sum (one kernel where a layer can fuse them).
#pragma once

#include "layers/module.h"

#include <ATen/core/Tensor.h>

#include <utility>

namespace lintime::layers {

class Norm : public Module {
 public:
  // x [..., hidden_size] -> same shape and dtype.
  virtual at::Tensor forward(const at::Tensor& x) const = 0;
  // (x + residual, forward(x + residual)).
  virtual std::pair<at::Tensor, at::Tensor> add_forward(const at::Tensor& x, const at::Tensor& residual) const {
    at::Tensor sum = x.add(residual);
    at::Tensor normed = forward(sum);
    return {std::move(sum), std::move(normed)};
  }

  at::Tensor weight;  // [hidden_size] (undefined for an RMSNorm without elementwise_affine)
};

}  // namespace lintime::layers
