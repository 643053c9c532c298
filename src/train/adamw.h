// AdamW with decoupled weight decay, step for step the update of torch.optim.AdamW
// (foreach=False, amsgrad=False, maximize=False):
//   p <- p - lr * wd * p                   (decay, only for parameters that decay)
//   m <- beta1 * m + (1 - beta1) * g
//   v <- beta2 * v + (1 - beta2) * g^2
//   p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// t counts the steps a parameter actually took (parameters without a gradient are skipped,
// as in torch). Moments live on the parameter's device in its dtype, like torch's zeros_like.
// Parameters are updated in place, so the optimizer must be built after the model reaches its
// final device and dtype (Module::to replaces the tensors).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lintime::train {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  // With the default decay rule: whether embedding matrices (names containing "embed" or
  // "wte"/"wpe") decay. Norm weights and biases (1-D parameters) never do.
  bool decay_embeddings = false;
  // One multi-tensor update per group (ATen's _fused_adamw_, torch.optim.AdamW(fused=True))
  // instead of six ops per parameter: the same update, with the steps counted on the device.
  bool fused = false;
  // The moments' dtype (unset: each parameter's). fp32 moments on bf16 parameters (no master
  // copies) keep AdamW's state exact where a bf16 v would lose the small squared gradients; those
  // parameters take the per-parameter update, computed in fp32 and rounded once into the
  // parameter (ATen's fused update wants one dtype for a parameter and its moments).
  std::optional<at::ScalarType> moment_dtype;
};

// true: the parameter gets weight decay.
using DecayRule = std::function<bool(const std::string& name, const at::Tensor& parameter)>;

// The default rule: parameters with ndim >= 2 decay, except embeddings unless asked for.
DecayRule default_decay_rule(bool decay_embeddings);
// Everything decays (zoology passes model.parameters() to AdamW as one group).
DecayRule decay_all_rule();

class AdamW {
 public:
  // An empty rule means default_decay_rule(options.decay_embeddings).
  AdamW(std::vector<std::pair<std::string, at::Tensor>> named_parameters, AdamWOptions options,
        DecayRule decays = {});

  // One update from the parameters' .grad(); parameters without a gradient are skipped.
  void step();
  // Drops every gradient (sets .grad() undefined, as torch's zero_grad(set_to_none=True)).
  void zero_grad();

  double lr() const { return options_.lr; }
  void set_lr(double lr) { options_.lr = lr; }
  // CUDA-graph capture (train/graphed_step.h): the fused update reads its learning rate from
  // this fp32 scalar on the parameters' device instead of set_lr's value, so that a recorded
  // update replays at whatever rate the tensor holds (the same float either way).
  void read_lr_from(at::Tensor lr);

  // The counts step() keeps on the host (calls, and steps per parameter): a recorded update
  // that is replayed does not run step()'s host code, so its owner advances them itself.
  struct StepCounts {
    int64_t calls = 0;
    std::vector<int64_t> per_parameter;
  };
  StepCounts step_counts() const;
  void set_step_counts(const StepCounts& counts);
  const AdamWOptions& options() const { return options_; }
  // Number of step() calls.
  int64_t step_count() const { return step_count_; }
  bool decays(const std::string& name) const;
  // Parameter names, in the order given to the constructor.
  std::vector<std::string> parameter_names() const;

  // Named state tensors for checkpoints: "<param>.exp_avg", "<param>.exp_avg_sq" and
  // "<param>.step" (0-d int64), for every parameter that has taken a step.
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  // Throws lintime::Error (one line naming the tensor) unless `state` is a valid state for
  // these parameters: known names, complete triples, moment shapes equal to the parameter's.
  void validate_state(const std::map<std::string, at::Tensor>& state) const;
  // Validates first, then replaces the whole state; moments are copied to each parameter's
  // device and dtype. Nothing changes when validation fails.
  void load_state(const std::map<std::string, at::Tensor>& state, int64_t step_count);

 private:
  struct Slot {
    std::string name;
    at::Tensor parameter;
    bool decays = true;
    at::Tensor exp_avg;     // undefined until the first step
    at::Tensor exp_avg_sq;
    int64_t steps = 0;
    at::Tensor fused_steps;  // fused: the same count, a float on the parameter's device
    at::ScalarType moment_dtype = at::kFloat;
    bool separate_moments = false;  // moments in another dtype than the parameter: the per-parameter update
  };
  void step_one(Slot& slot);
  at::Tensor lr_tensor_;  // read_lr_from
  void fused_step();
  AdamWOptions options_;
  std::vector<Slot> slots_;
  int64_t step_count_ = 0;
};

}  // namespace lintime::train
