// Linear layer (weight [out, in], optional bias) and token embedding, N(0, std) init.
#include "layers/linear.h"

#include "core/error.h"

#include <ATen/ATen.h>

namespace lintime::layers {

Linear::Linear(int64_t in_features, int64_t out_features, double std, at::Generator& generator,
               bool bias)
    : in_features_(in_features), out_features_(out_features) {
  LINTIME_CHECK(in_features > 0 && out_features > 0, "Linear: in_features and out_features must be positive, got ",
                in_features, " and ", out_features);
  weight = new_parameter({out_features, in_features});
  init_normal(weight, std, generator);
  register_parameter("weight", weight);
  if (bias) {
    this->bias = new_parameter({out_features});
    init_constant(this->bias, 0.0);
    register_parameter("bias", this->bias);
  }
}

at::Tensor Linear::forward(const at::Tensor& x) const {
  return at::linear(x, weight, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt);
}

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim, double std, at::Generator& generator) {
  LINTIME_CHECK(num_embeddings > 0 && embedding_dim > 0, "Embedding: sizes must be positive, got ", num_embeddings,
                " and ", embedding_dim);
  weight = new_parameter({num_embeddings, embedding_dim});
  init_normal(weight, std, generator);
  register_parameter("weight", weight);
}

at::Tensor Embedding::forward(const at::Tensor& ids) const {
  TORCH_CHECK(ids.scalar_type() == at::kLong || ids.scalar_type() == at::kInt,
              "Embedding: ids must be int64 or int32, got ", ids.scalar_type());
  return at::embedding(weight, ids);
}

}  // namespace lintime::layers
