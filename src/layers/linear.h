// A bias-free (by default) linear map y = x Wᵀ (+ b), weight [out, in] as in torch / fla
// checkpoints, and a token embedding table [vocab, d]; both initialised N(0, std) from a CPU
// generator.
#pragma once

#include "layers/module.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

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

// Several linear maps of one input as one matrix product. place_adjacent moves the maps'
// weights into one buffer [Σ out, in], values kept (each weight a row block of it);
// linear_maps multiplies by that whole buffer once when the weights still lie back to back and
// none has a bias (one kernel and one pass over x instead of one per map); when a gradient is
// recorded, through an autograd function whose backward accumulates x's gradient in the GEMMs
// (no add kernels) and forms each weight's gradient, unless join_under_autograd is false (the
// outputs are then contiguous, as elementwise kernels that read them want: ATen's do not
// vectorise column views). Otherwise one product per map.
void place_adjacent(const std::vector<Linear*>& maps);
// x [..., in] -> one output [..., out_i] per map, in order.
std::vector<at::Tensor> linear_maps(const at::Tensor& x, const std::vector<const Linear*>& maps,
                                    bool join_under_autograd = true);
// The one product [..., Σ out] when linear_maps would take it, else an undefined tensor.
at::Tensor joined_linear(const at::Tensor& x, const std::vector<const Linear*>& maps);
// The maps' weights as one [Σ out, in] matrix when they lie back to back in one buffer, else
// an undefined tensor.
at::Tensor adjacent_weights(const std::vector<const Linear*>& maps);

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
