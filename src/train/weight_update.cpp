#include "train/weight_update.h"

#include "core/error.h"
#include "train/distributed.h"
#include "train/grad_clip.h"
#include "train/gradient_reducer.h"
#include "train/sharded_weight_update.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace lintime::train {

void WeightUpdate::read_lr_from(const at::Tensor&) { fail("train: this weight update cannot be captured in a CUDA graph"); }
AdamW::StepCounts WeightUpdate::step_counts() const { return {}; }
void WeightUpdate::set_step_counts(const AdamW::StepCounts&) {}

namespace {

std::vector<at::Tensor> tensors_of(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  std::vector<at::Tensor> tensors;
  for (const auto& [name, tensor] : named) tensors.push_back(tensor);
  return tensors;
}

// The replicated form (weight_update.h). fp32/fp64, and bf16 without master weights: AdamW
// updates the parameters themselves.
// bf16/fp16: fp32 master copies; the parameters (in the compute dtype) hand their gradients to
// the masters after each micro-batch (summed in fp32) and take the masters' values after each
// update.
class ReplicatedWeightUpdate final : public WeightUpdate {
 public:
  ReplicatedWeightUpdate(layers::Module& model, const WeightUpdateOptions& options) {
    separate_ = (options.compute_dtype == at::kBFloat16 && options.master_weights) || options.compute_dtype == at::kHalf;
    {
      at::NoGradGuard no_grad;
      if (separate_) {
        for (auto& [name, parameter] : model.named_parameters()) masters_.emplace_back(name, parameter.detach().to(at::kFloat).clone());
        model.to(masters_.front().second.device(), options.compute_dtype);
      } else if (model.named_parameters().front().second.scalar_type() != options.compute_dtype) {
        model.to(model.named_parameters().front().second.device(), options.compute_dtype);
      }
    }
    parameters_ = model.named_parameters();
    for (auto& [name, parameter] : parameters_) parameter.requires_grad_(true);
    if (!separate_) masters_ = parameters_;
    optimizer_ = std::make_unique<AdamW>(masters_, options.adam, options.decays);
    if (options.communicator != nullptr) {
      GradientReducer::Options reducer_options;
      reducer_options.bucket_bytes = options.bucket_bytes;
      reducer_options.reduce_dtype = masters_.front().second.scalar_type();
      reducer_ = std::make_unique<GradientReducer>(tensors_of(parameters_), *options.communicator, reducer_options);
    }
  }

  void begin_micro_batch(bool last) override {
    if (reducer_) reducer_->set_sync(last);
  }

  void end_micro_batch(bool last) override {
    if (reducer_ && last) {
      reducer_->finish();  // the summed gradients, views of the buckets, become the masters'
      for (size_t i = 0; i < masters_.size(); ++i) masters_[i].second.mutable_grad() = reducer_->sum(i);
    }
    collect_gradients();
  }

  at::Tensor grad_norm() override { return train::grad_norm(tensors_of(masters_)); }
  at::Tensor clip(double max_norm) override { return clip_grad_norm(masters_, max_norm); }

  void scale_gradients(double factor) override {
    at::NoGradGuard no_grad;
    for (auto& [name, master] : masters_)
      if (master.grad().defined()) master.mutable_grad().mul_(factor);
  }

  void step(double lr) override {
    optimizer_->set_lr(lr);
    optimizer_->step();
    if (!separate_) return;
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < parameters_.size(); ++i) parameters_[i].second.copy_(masters_[i].second);
  }

  void zero_gradients() override {
    for (auto& [name, master] : masters_) master.mutable_grad() = at::Tensor();
    for (auto& [name, parameter] : parameters_) parameter.mutable_grad() = at::Tensor();
  }

  CheckpointContents checkpoint_contents() override {
    CheckpointContents contents;
    contents.weights = masters_;
    contents.optimizer = optimizer_.get();
    return contents;
  }

  void load_optimizer(const std::string& dir) override { load_optimizer_state(dir, *optimizer_); }

  bool capturable() const override {
    return !reducer_ && optimizer_->options().fused && !optimizer_->options().moment_dtype.has_value();
  }
  void read_lr_from(const at::Tensor& lr) override { optimizer_->read_lr_from(lr); }
  AdamW::StepCounts step_counts() const override { return optimizer_->step_counts(); }
  void set_step_counts(const AdamW::StepCounts& counts) override { optimizer_->set_step_counts(counts); }

  int64_t state_bytes() const override {
    int64_t bytes = 0;
    if (separate_) {
      for (const auto& [name, master] : masters_) bytes += master.numel() * master.element_size();
    }
    for (const auto& [name, tensor] : optimizer_->state_tensors()) bytes += tensor.numel() * tensor.element_size();
    return bytes;
  }

 private:
  // bf16/fp16: each micro-batch's gradients into the fp32 masters' (summed there).
  void collect_gradients() {
    if (!separate_) return;
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < parameters_.size(); ++i) {
      at::Tensor& gradient = parameters_[i].second.mutable_grad();
      if (!gradient.defined()) continue;
      at::Tensor& master_gradient = masters_[i].second.mutable_grad();
      if (master_gradient.defined()) {
        master_gradient.add_(gradient);
      } else {
        master_gradient = gradient.to(at::kFloat);
      }
      gradient = at::Tensor();
    }
  }

  bool separate_ = false;
  std::vector<std::pair<std::string, at::Tensor>> parameters_, masters_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<GradientReducer> reducer_;
};

// Every rank starts from rank 0's weights: the ranks' parameter shapes are compared first (a
// broadcast between different models would scramble them), and a checksum of the weights after.
void start_from_root_weights(Communicator& communicator, layers::Module& model) {
  std::vector<at::Tensor> parameters;
  double elements = 0;
  for (const auto& [name, parameter] : model.named_parameters()) {
    parameters.push_back(parameter);
    elements += static_cast<double>(parameter.numel());
  }
  const auto counts = communicator.gather(elements, "comparing the ranks' parameter counts");
  for (size_t r = 0; r < counts.size(); ++r) {
    LINTIME_CHECK(counts[r] == counts[0], "distributed: rank ", r, " builds a model of ", counts[r],
                  " parameters, rank 0 one of ", counts[0], " (every rank must run the same config)");
  }
  at::NoGradGuard no_grad;
  communicator.broadcast(parameters, "broadcasting rank 0's weights");
  double checksum = 0;
  for (const at::Tensor& parameter : parameters) checksum += parameter.detach().to(at::kDouble).abs().sum().item<double>();
  const auto checksums = communicator.gather(checksum, "comparing the ranks' weights");
  for (size_t r = 0; r < checksums.size(); ++r) {
    LINTIME_CHECK(checksums[r] == checksums[0], "distributed: rank ", r, "'s weights differ from rank 0's after the ",
                  "broadcast (sum of magnitudes ", checksums[r], " vs ", checksums[0], ")");
  }
}

}  // namespace

std::unique_ptr<WeightUpdate> make_weight_update(layers::Module& model, const WeightUpdateOptions& options) {
  for (auto& [name, parameter] : model.named_parameters()) {
    LINTIME_CHECK(parameter.scalar_type() == at::kFloat || parameter.scalar_type() == at::kDouble,
                  "train: the task's model must start in fp32 or fp64, got ", parameter.scalar_type(), " for '", name, "'");
  }
  LINTIME_CHECK(!options.shard || options.communicator != nullptr,
                "train.shard_optimizer: shards the optimizer across the ranks of a distributed run; this run has one "
                "process (start it with torchrun, or set shard_optimizer = false)");
  if (options.communicator != nullptr) start_from_root_weights(*options.communicator, model);
  if (options.shard) return make_sharded_weight_update(model, options);
  return std::make_unique<ReplicatedWeightUpdate>(model, options);
}

}  // namespace lintime::train
