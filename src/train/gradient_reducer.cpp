#include "train/gradient_reducer.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>

namespace lintime::train {

GradientReducer::GradientReducer(std::vector<at::Tensor> parameters, Communicator& communicator, Options options)
    : parameters_(std::move(parameters)), communicator_(communicator), options_(std::move(options)) {
  LINTIME_CHECK(!parameters_.empty(), "GradientReducer: no parameters");
  LINTIME_CHECK(options_.bucket_bytes > 0, "--bucket-mb: must be positive, got ", options_.bucket_bytes, " bytes");
  self_ = std::make_shared<GradientReducer*>(this);
  const int64_t element_bytes = at::elementSize(options_.reduce_dtype);
  const auto flat_options = parameters_.front().options().dtype(options_.reduce_dtype).requires_grad(false);

  // Buckets in reverse parameter order, each closed once it holds bucket_bytes.
  bucket_of_.resize(parameters_.size());
  position_in_bucket_.resize(parameters_.size());
  ready_.assign(parameters_.size(), false);
  holds_part_.assign(parameters_.size(), false);
  int64_t filled = 0;
  for (size_t k = parameters_.size(); k-- > 0;) {
    if (buckets_.empty() || filled >= options_.bucket_bytes) {
      buckets_.emplace_back();
      filled = 0;
    }
    Bucket& bucket = buckets_.back();
    const int64_t offset = bucket.parameters.empty() ? 0 : bucket.offsets.back() + parameters_[bucket.parameters.back()].numel();
    position_in_bucket_[k] = bucket.parameters.size();
    bucket.offsets.push_back(offset);
    bucket.parameters.push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    filled += parameters_[k].numel() * element_bytes;
  }
  const int64_t world = communicator_.world_size(), rank = communicator_.rank();
  for (Bucket& bucket : buckets_) {
    const int64_t used = bucket.offsets.back() + parameters_[bucket.parameters.back()].numel();
    const int64_t size = options_.sharded ? (used + world - 1) / world * world : used;
    bucket.flat = at::zeros({size}, flat_options);  // the padding stays zero
    bucket.pending = static_cast<int64_t>(bucket.parameters.size());
    if (!options_.sharded) continue;
    const int64_t part = size / world, first = rank * part, last = first + part;
    bucket.shard = at::zeros({part}, flat_options);
    for (size_t j = 0; j < bucket.parameters.size(); ++j) {
      const int64_t begin = std::max(first, bucket.offsets[j]);
      const int64_t end = std::min(last, bucket.offsets[j] + parameters_[bucket.parameters[j]].numel());
      if (begin < end) bucket.segments.push_back({bucket.parameters[j], begin - bucket.offsets[j], end - bucket.offsets[j], begin - first});
    }
  }

  for (size_t i = 0; i < parameters_.size(); ++i) {
    LINTIME_CHECK(parameters_[i].requires_grad() && parameters_[i].is_leaf(), "GradientReducer: parameter ", i,
                  " is not a leaf that requires a gradient");
    auto accumulator = torch::autograd::impl::grad_accumulator(parameters_[i]);
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
  if (!sync_) {  // an earlier micro-batch: accumulate in the bucket, nothing is sent
    take_gradient(parameter);
    return;
  }
  if (ready_[parameter]) return;
  ready_[parameter] = true;
  --buckets_[bucket_of_[parameter]].pending;
  while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].pending == 0) start(buckets_[next_to_start_++]);
}

void GradientReducer::take_gradient(size_t i) {
  at::NoGradGuard no_grad;
  const Bucket& bucket = buckets_[bucket_of_[i]];
  at::Tensor slice = bucket.flat.narrow(0, bucket.offsets[position_in_bucket_[i]], parameters_[i].numel());
  at::Tensor& gradient = parameters_[i].mutable_grad();
  if (!gradient.defined()) return;
  if (holds_part_[i]) {
    slice.add_(gradient.reshape({-1}));  // the sum in reduce_dtype, as MasterWeights::collect_gradients adds
  } else {
    slice.copy_(gradient.reshape({-1}));
    holds_part_[i] = true;
  }
  gradient = at::Tensor();  // its memory goes as soon as the bucket holds it
}

void GradientReducer::start(Bucket& bucket) {
  at::NoGradGuard no_grad;
  for (size_t j = 0; j < bucket.parameters.size(); ++j) {
    const size_t i = bucket.parameters[j];
    take_gradient(i);
    // A parameter no micro-batch of the step used contributes zeros.
    if (!holds_part_[i]) bucket.flat.narrow(0, bucket.offsets[j], parameters_[i].numel()).zero_();
  }
  bucket.work = options_.sharded ? communicator_.start_reduce_scatter(bucket.shard, bucket.flat)
                                 : communicator_.start_sum(bucket.flat);
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
    bucket.pending = static_cast<int64_t>(bucket.parameters.size());
  }
  ready_.assign(ready_.size(), false);
  holds_part_.assign(holds_part_.size(), false);
  next_to_start_ = 0;
  sync_ = false;
}

at::Tensor GradientReducer::sum(size_t parameter) const {
  LINTIME_CHECK(!options_.sharded, "GradientReducer::sum: a sharded reducer keeps only this rank's part");
  return bucket_view(bucket_of_[parameter], buckets_[bucket_of_[parameter]].flat, parameter);
}

at::Tensor GradientReducer::bucket_view(size_t bucket, const at::Tensor& whole, size_t parameter) const {
  const Bucket& b = buckets_[bucket];
  return whole.narrow(0, b.offsets[position_in_bucket_[parameter]], parameters_[parameter].numel())
      .view(parameters_[parameter].sizes());
}

void GradientReducer::gather_bucket(size_t bucket, const at::Tensor& part, at::Tensor& whole) {
  communicator_.gather_parts(whole, part, "gathering the updated weights of bucket " + std::to_string(bucket + 1));
}

}  // namespace lintime::train
