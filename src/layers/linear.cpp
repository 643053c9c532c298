// Linear layer (weight [out, in], optional bias) and token embedding, N(0, std) init.
#include "layers/linear.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

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

void place_adjacent(const std::vector<Linear*>& maps) {
  LINTIME_CHECK(!maps.empty(), "place_adjacent: no maps");
  int64_t rows = 0;
  for (const Linear* map : maps) {
    LINTIME_CHECK(map->in_features() == maps.front()->in_features(), "place_adjacent: in_features differ (",
                  map->in_features(), " vs ", maps.front()->in_features(), ")");
    rows += map->out_features();
  }
  const at::Tensor& first = maps.front()->weight;
  // Allocated like the weights themselves (a loader's dtype and device; nothing is drawn).
  at::Tensor buffer = at::empty({rows, maps.front()->in_features()}, first.options().requires_grad(false));
  int64_t row = 0;
  for (Linear* map : maps) {
    const bool requires_grad = map->weight.requires_grad();
    at::Tensor block = buffer.narrow(0, row, map->out_features());
    block.copy_(map->weight.detach());
    map->weight = block.set_requires_grad(requires_grad);  // a leaf view: the optimiser updates the buffer
    row += map->out_features();
  }
}

at::Tensor adjacent_weights(const std::vector<const Linear*>& maps) {
  if (maps.empty()) return at::Tensor();
  const at::Tensor& first = maps.front()->weight;
  if (!first.defined() || first.dim() != 2 || !first.is_contiguous()) return at::Tensor();
  int64_t rows = 0;
  const char* expected = static_cast<const char*>(first.data_ptr());
  for (const Linear* map : maps) {
    const at::Tensor& w = map->weight;
    if (map->bias.defined() || !w.defined() || w.dim() != 2 || !w.is_contiguous() || w.size(1) != first.size(1) ||
        w.scalar_type() != first.scalar_type() || w.device() != first.device() ||
        !w.storage().is_alias_of(first.storage()) || static_cast<const char*>(w.data_ptr()) != expected) {
      return at::Tensor();
    }
    expected += w.numel() * w.element_size();
    rows += w.size(0);
  }
  return first.detach().as_strided({rows, first.size(1)}, {first.size(1), 1});
}

at::Tensor joined_linear(const at::Tensor& x, const std::vector<const Linear*>& maps) {
  // Autograd must see each weight: while it records, the product through the buffer's view
  // would hide them.
  bool recording = at::GradMode::is_enabled() && x.requires_grad();
  for (const Linear* map : maps) recording = recording || (at::GradMode::is_enabled() && map->weight.requires_grad());
  if (recording) return at::Tensor();
  const at::Tensor weights = adjacent_weights(maps);
  return weights.defined() ? at::linear(x, weights) : at::Tensor();
}

std::vector<at::Tensor> linear_maps(const at::Tensor& x, const std::vector<const Linear*>& maps) {
  const at::Tensor y = joined_linear(x, maps);  // [..., Σ out]
  std::vector<at::Tensor> outputs;
  outputs.reserve(maps.size());
  if (!y.defined()) {
    for (const Linear* map : maps) outputs.push_back(map->forward(x));
    return outputs;
  }
  int64_t column = 0;
  for (const Linear* map : maps) {
    outputs.push_back(y.narrow(-1, column, map->out_features()));
    column += map->out_features();
  }
  return outputs;
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
