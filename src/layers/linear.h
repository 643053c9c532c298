// A bias-free (by default) linear map y = x Wᵀ (+ b), weight [out, in] as in torch / fla
// checkpoints, and a token embedding table [vocab, d]; both initialised N(0, std) from a CPU
// generator.
#pragma once

#include "layers/module.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lintime::layers {

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, double std, at::Generator& generator,
         bool bias = false);

  // x [..., in] -> [..., out]
  at::Tensor forward(const at::Tensor& x) const;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out], undefined without bias (initialised to 0)

 private:
  int64_t in_features_;
  int64_t out_features_;
};

class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim, double std, at::Generator& generator);

  // ids [...] int64 -> [..., embedding_dim] in the weight's dtype.
  at::Tensor forward(const at::Tensor& ids) const;

  int64_t num_embeddings() const { return weight.size(0); }
  int64_t embedding_dim() const { return weight.size(1); }

  at::Tensor weight;  // [num_embeddings, embedding_dim]
};

}  // namespace lintime::layers
