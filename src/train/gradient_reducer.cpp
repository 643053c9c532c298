#include "train/gradient_reducer.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

namespace lintime::train {

GradientReducer::GradientReducer(std::vector<at::Tensor> compute, std::vector<at::Tensor> master,
                                 Communicator& communicator, int64_t bucket_bytes)
    : compute_(std::move(compute)), master_(std::move(master)), communicator_(communicator) {
  LINTIME_CHECK(compute_.size() == master_.size() && !compute_.empty(),
                "GradientReducer: expected one master per parameter, got ", compute_.size(), " and ", master_.size());
  LINTIME_CHECK(bucket_bytes > 0, "train.bucket_mb: must be positive, got ", bucket_bytes, " bytes");
  self_ = std::make_shared<GradientReducer*>(this);

  // Buckets in reverse parameter order, each closed once it holds bucket_bytes.
  bucket_of_.resize(compute_.size());
  ready_.assign(compute_.size(), false);
  int64_t filled = 0;
  for (size_t k = compute_.size(); k-- > 0;) {
    const at::Tensor& parameter = master_[k];
    if (buckets_.empty() || filled >= bucket_bytes) {
      buckets_.emplace_back();
      filled = 0;
    }
    Bucket& bucket = buckets_.back();
    bucket.offsets.push_back(bucket.parameters.empty() ? 0 : bucket.offsets.back() + master_[bucket.parameters.back()].numel());
    bucket.parameters.push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    filled += static_cast<int64_t>(parameter.numel() * parameter.element_size());
  }
  for (Bucket& bucket : buckets_) {
    const at::Tensor& last = master_[bucket.parameters.back()];
    bucket.flat = at::empty({bucket.offsets.back() + last.numel()}, last.options().requires_grad(false));
    bucket.pending = static_cast<int64_t>(bucket.parameters.size());
  }

  for (size_t i = 0; i < compute_.size(); ++i) {
    LINTIME_CHECK(compute_[i].requires_grad() && compute_[i].is_leaf(), "GradientReducer: parameter ", i,
                  " is not a leaf that requires a gradient");
    auto accumulator = torch::autograd::impl::grad_accumulator(compute_[i]);
    std::shared_ptr<GradientReducer*> self = self_;
    accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [self, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          if (GradientReducer* reducer = *self) reducer->mark_ready(i);
          return outputs;
        }));
    accumulators_.push_back(std::move(accumulator));  // keeps the node (and its hook) alive
  }
}

GradientReducer::~GradientReducer() {
  std::lock_guard<std::mutex> lock(mutex_);
  *self_ = nullptr;
}

void GradientReducer::set_sync(bool sync) {
  std::lock_guard<std::mutex> lock(mutex_);
  sync_ = sync;
}

void GradientReducer::mark_ready(size_t parameter) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!sync_ || ready_[parameter]) return;
  ready_[parameter] = true;
  --buckets_[bucket_of_[parameter]].pending;
  start_ready_buckets();
}

void GradientReducer::start_ready_buckets() {
  while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].pending == 0) start(buckets_[next_to_start_++]);
}

void GradientReducer::start(Bucket& bucket) {
  at::NoGradGuard no_grad;
  for (size_t j = 0; j < bucket.parameters.size(); ++j) {
    const size_t i = bucket.parameters[j];
    at::Tensor slice = bucket.flat.narrow(0, bucket.offsets[j], master_[i].numel());
    const at::Tensor& gradient = compute_[i].grad();
    if (gradient.defined()) {
      slice.copy_(gradient.reshape({-1}));
    } else {
      slice.zero_();  // a parameter the step did not use
    }
    if (!master_[i].is_same(compute_[i])) {
      // The gradient plus what the earlier micro-batches left in the master (as
      // MasterWeights::collect_gradients adds them), and the compute gradient's memory goes.
      const at::Tensor& earlier = master_[i].grad();
      if (earlier.defined()) slice.add_(earlier.reshape({-1}));
      compute_[i].mutable_grad() = at::Tensor();
    }
  }
  bucket.work = communicator_.start_sum(bucket.flat);
}

void GradientReducer::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  LINTIME_CHECK(sync_, "GradientReducer::finish: the step's last backward ran without set_sync(true)");
  while (next_to_start_ < buckets_.size()) start(buckets_[next_to_start_++]);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    communicator_.wait(bucket.work, "the gradient sum of bucket " + std::to_string(b + 1) + " of " +
                                        std::to_string(buckets_.size()));
    bucket.work.reset();
    for (size_t j = 0; j < bucket.parameters.size(); ++j) {
      const size_t i = bucket.parameters[j];
      master_[i].mutable_grad() = bucket.flat.narrow(0, bucket.offsets[j], master_[i].numel()).view(master_[i].sizes());
    }
    bucket.pending = static_cast<int64_t>(bucket.parameters.size());
  }
  ready_.assign(ready_.size(), false);
  next_to_start_ = 0;
  sync_ = false;
}

}  // namespace lintime::train
