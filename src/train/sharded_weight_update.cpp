#include "train/sharded_weight_update.h"

#include "core/error.h"
#include "train/distributed.h"
#include "train/gradient_reducer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <map>

namespace lintime::train {

namespace {

// ZeRO stage 1 over the reducer's buckets: rank r owns the r-th 1/W of every (padded) bucket.
// Its master weights for those elements live in one flat tensor per bucket, AdamW steps them as
// "segments" (the part of one parameter inside the shard, with that parameter's decay rule),
// and its gradients are the reduce-scattered sums themselves.
class ShardedWeightUpdate final : public WeightUpdate {
 public:
  ShardedWeightUpdate(layers::Module& model, const WeightUpdateOptions& options) : communicator_(*options.communicator) {
    const auto initial = model.named_parameters();  // fp32/fp64, rank 0's on every rank
    const at::ScalarType master_dtype = options.compute_dtype == at::kDouble ? at::kDouble : at::kFloat;
    if (initial.front().second.scalar_type() != options.compute_dtype) {
      at::NoGradGuard no_grad;
      model.to(initial.front().second.device(), options.compute_dtype);
    }
    parameters_ = model.named_parameters();
    for (auto& [name, parameter] : parameters_) parameter.requires_grad_(true);

    GradientReducer::Options reducer_options;
    reducer_options.bucket_bytes = options.bucket_bytes;
    reducer_options.reduce_dtype = master_dtype;
    reducer_options.sharded = true;
    std::vector<at::Tensor> parameters;
    for (const auto& [name, parameter] : parameters_) parameters.push_back(parameter);
    reducer_ = std::make_unique<GradientReducer>(parameters, communicator_, reducer_options);

    // This rank's master weights, from the whole initial ones; AdamW over their segments.
    const DecayRule base_rule = options.decays ? options.decays : default_decay_rule(options.adam.decay_embeddings);
    std::vector<std::pair<std::string, at::Tensor>> segments;
    std::map<std::string, bool> segment_decays;
    int64_t largest = 0;
    at::NoGradGuard no_grad;
    for (size_t b = 0; b < static_cast<size_t>(reducer_->bucket_count()); ++b) {
      largest = std::max(largest, reducer_->bucket_numel(b));
      const at::Tensor& gradient_shard = reducer_->shard(b);
      at::Tensor master = at::zeros(gradient_shard.sizes(), gradient_shard.options());
      for (const GradientReducer::Segment& segment : reducer_->segments(b)) {
        const int64_t length = segment.end - segment.begin;
        const auto& [name, whole] = initial[segment.parameter];
        at::Tensor view = master.narrow(0, segment.offset, length);
        view.copy_(whole.detach().reshape({-1}).narrow(0, segment.begin, length));
        view.mutable_grad() = gradient_shard.narrow(0, segment.offset, length);
        const std::string segment_name = segment_key(segment);
        segment_decays[segment_name] = base_rule(name, whole);
        segments.emplace_back(segment_name, view);
      }
      master_shards_.push_back(master);
    }
    scratch_ = at::empty({largest}, reducer_->shard(0).options());
    optimizer_ = std::make_unique<AdamW>(segments, options.adam, [segment_decays](const std::string& name, const at::Tensor&) {
      return segment_decays.at(name);
    });
  }

  void begin_micro_batch(bool last) override { reducer_->set_sync(last); }

  // The reducer's hooks accumulate the micro-batches in its buckets; after the last, this rank's
  // summed gradients are in the shards (the masters' .grad).
  void end_micro_batch(bool last) override {
    if (last) reducer_->finish();
  }

  at::Tensor grad_norm() override {
    double squares = 0;
    for (size_t b = 0; b < master_shards_.size(); ++b)
      squares += reducer_->shard(b).to(at::kDouble).square().sum().item<double>();
    const double total = std::sqrt(communicator_.sum({squares}, "summing the gradient norm over the ranks")[0]);
    return at::scalar_tensor(total, at::TensorOptions().dtype(master_shards_.front().scalar_type()));
  }

  at::Tensor clip(double max_norm) override {
    LINTIME_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got ", max_norm);
    at::Tensor total = grad_norm();
    const double coefficient = std::min(max_norm / (total.item<double>() + 1e-6), 1.0);
    scale_gradients(coefficient);
    return total;
  }

  void scale_gradients(double factor) override {
    at::NoGradGuard no_grad;
    for (size_t b = 0; b < master_shards_.size(); ++b) reducer_->shard(b).mul_(factor);
  }

  void step(double lr) override {
    optimizer_->set_lr(lr);
    optimizer_->step();
    // Every rank's updated part into every rank's parameters.
    at::NoGradGuard no_grad;
    for (size_t b = 0; b < master_shards_.size(); ++b) {
      at::Tensor whole = scratch_.narrow(0, 0, reducer_->bucket_numel(b));
      reducer_->gather_bucket(b, master_shards_[b], whole);
      for (size_t i : reducer_->bucket_parameters(b)) parameters_[i].second.copy_(reducer_->bucket_view(b, whole, i));
    }
  }

  void zero_gradients() override {
    for (auto& [name, parameter] : parameters_) parameter.mutable_grad() = at::Tensor();
  }

  CheckpointContents checkpoint_contents() override {
    CheckpointContents contents;
    contents.weights.resize(parameters_.size());
    for (size_t b = 0; b < master_shards_.size(); ++b) {
      const at::Tensor whole = gathered(b, master_shards_[b]);
      for (size_t i : reducer_->bucket_parameters(b)) contents.weights[i] = {parameters_[i].first, reducer_->bucket_view(b, whole, i)};
    }
    contents.optimizer_step_count = optimizer_->step_count();
    if (optimizer_->step_count() == 0) return contents;  // no moments yet
    std::map<std::string, at::Tensor> state;
    for (auto& [name, tensor] : optimizer_->state_tensors()) state[name] = tensor;
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      for (size_t b = 0; b < master_shards_.size(); ++b) {
        at::Tensor part = at::zeros_like(master_shards_[b]);
        for (const GradientReducer::Segment& segment : reducer_->segments(b))
          part.narrow(0, segment.offset, segment.end - segment.begin).copy_(state.at(segment_key(segment) + suffix));
        const at::Tensor whole = gathered(b, part);
        for (size_t i : reducer_->bucket_parameters(b))
          contents.optimizer_tensors.emplace_back(parameters_[i].first + suffix, reducer_->bucket_view(b, whole, i));
      }
    }
    for (const auto& [name, parameter] : parameters_)
      contents.optimizer_tensors.emplace_back(name + ".step", at::scalar_tensor(optimizer_->step_count(), at::kLong));
    return contents;
  }

  int64_t state_bytes() const override {
    int64_t bytes = 0;
    for (const at::Tensor& master : master_shards_) bytes += master.numel() * master.element_size();
    for (const auto& [name, tensor] : optimizer_->state_tensors()) bytes += tensor.numel() * tensor.element_size();
    return bytes;
  }

  void load_optimizer(const std::string& dir) override {
    int64_t step_count = 0;
    const auto whole = read_optimizer_tensors(dir, &step_count);
    std::map<std::string, at::Tensor> state;
    for (size_t b = 0; b < master_shards_.size(); ++b) {
      for (const GradientReducer::Segment& segment : reducer_->segments(b)) {
        const std::string& name = parameters_[segment.parameter].first;
        if (whole.find(name + ".exp_avg") == whole.end()) continue;  // AdamW::load_state names what is missing
        for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
          const at::Tensor& tensor = whole.at(name + suffix);
          LINTIME_CHECK(tensor.numel() == parameters_[segment.parameter].second.numel(), "checkpoint '", dir,
                        "': optimizer tensor '", name, suffix, "' has ", tensor.numel(), " elements, the parameter ",
                        parameters_[segment.parameter].second.numel());
          state[segment_key(segment) + suffix] = tensor.reshape({-1}).narrow(0, segment.begin, segment.end - segment.begin);
        }
        LINTIME_CHECK(whole.count(name + ".step"), "checkpoint '", dir, "': optimizer tensor '", name, ".step' is missing");
        state[segment_key(segment) + ".step"] = whole.at(name + ".step");
      }
    }
    optimizer_->load_state(state, step_count);
  }

 private:
  std::string segment_key(const GradientReducer::Segment& segment) const {
    return parameters_[segment.parameter].first + "[" + std::to_string(segment.begin) + ":" + std::to_string(segment.end) + "]";
  }

  // Bucket b's parts of every rank, whole (a collective).
  at::Tensor gathered(size_t b, const at::Tensor& part) {
    at::Tensor whole = at::empty({reducer_->bucket_numel(b)}, part.options());
    reducer_->gather_bucket(b, part, whole);
    return whole;
  }

  Communicator& communicator_;
  std::vector<std::pair<std::string, at::Tensor>> parameters_;
  std::vector<at::Tensor> master_shards_;  // per bucket: this rank's master weights
  at::Tensor scratch_;                     // a whole bucket, for the gathered weights
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<AdamW> optimizer_;
};

}  // namespace

std::unique_ptr<WeightUpdate> make_sharded_weight_update(layers::Module& model, const WeightUpdateOptions& options) {
  LINTIME_CHECK(options.communicator != nullptr, "train.shard_optimizer: needs a distributed run");
  return std::make_unique<ShardedWeightUpdate>(model, options);
}

}  // namespace lintime::train
