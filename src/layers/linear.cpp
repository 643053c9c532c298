// Linear layer (weight [out, in], optional bias) and token embedding, N(0, std) init.
#include "layers/linear.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

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

namespace {

// Training's joined product: one GEMM by the buffer the weights lie in, outputs as column
// views of it; the backward accumulates x's gradient in the GEMMs themselves (beta 1) where
// autograd through one product per map adds the maps' gradients with add kernels (three per GSA
// layer, one per MLP), and forms each weight's gradient apart.
class JoinedLinearFunction : public torch::autograd::Function<JoinedLinearFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                at::TensorList weights) {
    int64_t rows = 0;
    for (const at::Tensor& w : weights) rows += w.size(0);
    const int64_t in = weights[0].size(1);
    const at::Tensor joined = weights[0].detach().as_strided({rows, in}, {in, 1});  // adjacent_weights checked this
    const at::Tensor y = at::linear(x, joined);  // [..., Σ out]
    std::vector<at::Tensor> saved = {x};
    saved.insert(saved.end(), weights.begin(), weights.end());
    ctx->save_for_backward(saved);
    torch::autograd::variable_list outputs;
    int64_t column = 0;
    for (const at::Tensor& w : weights) {
      outputs.push_back(y.narrow(-1, column, w.size(0)));
      column += w.size(0);
    }
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor x_rows = x.reshape({-1, x.size(-1)});  // [N, in]
    torch::autograd::variable_list grads(saved.size());
    at::Tensor grad_x;  // [N, in]
    for (size_t i = 0; i + 1 < saved.size(); ++i) {
      const at::Tensor& weight = saved[i + 1];  // [out_i, in]
      const at::Tensor grad = grad_outputs[i].reshape({-1, weight.size(0)});  // [N, out_i]
      if (ctx->needs_input_grad(0)) grad_x = grad_x.defined() ? grad_x.addmm_(grad, weight) : at::mm(grad, weight);
      if (ctx->needs_input_grad(i + 1)) grads[i + 1] = at::mm(grad.t(), x_rows);
    }
    if (grad_x.defined()) grads[0] = grad_x.view(x.sizes());
    return grads;
  }
};

}  // namespace

std::vector<at::Tensor> linear_maps(const at::Tensor& x, const std::vector<const Linear*>& maps,
                                    bool join_under_autograd) {
  bool recording = at::GradMode::is_enabled() && x.requires_grad();
  for (const Linear* map : maps) recording = recording || (at::GradMode::is_enabled() && map->weight.requires_grad());
  if (recording && join_under_autograd && maps.size() > 1 && adjacent_weights(maps).defined()) {
    std::vector<at::Tensor> weights;
    for (const Linear* map : maps) weights.push_back(map->weight);
    return JoinedLinearFunction::apply(x, at::TensorList(weights));  // a TensorList: one edge per weight
  }
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
