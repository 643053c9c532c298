// The gradient sum of data-parallel training (PyTorch DDP's reducer, written again in C++:
// LibTorch has none). Parameters are grouped into buckets of about `bucket_bytes`, in reverse
// order (the backward produces the last layers' gradients first); a hook on each parameter's
// gradient accumulator marks it ready, and a bucket whose parameters are all ready is copied
// into one flat buffer and summed across ranks at once, while the backward goes on. Buckets
// start in index order on every rank (collectives must match), and `finish` starts those no
// hook started and waits for all.
//
// The sums run in `reduce_dtype` (the master weights' dtype: fp32 for bf16/fp16 compute). The
// buckets also accumulate the micro-batches: on the step's earlier micro-batches each hook adds
// its parameter's gradient into the bucket (in reduce_dtype) and frees it, so that gradient
// accumulation needs no second full-size buffer and no pass after the backward.
//
// Whole sums (all-reduce): every rank gets every parameter's sum, `sum(i)`. Sharded (ZeRO,
// reduce-scatter): each bucket is padded to a multiple of the world size and rank r gets the
// sum of its r-th part only, `shard(b)`; `segments()` says which parameter elements those are.
#pragma once

#include "train/distributed.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace torch::autograd {
struct Node;
}  // namespace torch::autograd

namespace lintime::train {

class GradientReducer {
 public:
  struct Options {
    int64_t bucket_bytes = 25 << 20;
    at::ScalarType reduce_dtype = at::kFloat;
    bool sharded = false;
  };

  // The elements [begin, end) of parameter i (flattened) at `offset` in a bucket's shard.
  struct Segment {
    size_t parameter = 0;
    int64_t begin = 0, end = 0;
    int64_t offset = 0;
  };

  // `parameters` receive their gradients from the backward (leaves that require them).
  GradientReducer(std::vector<at::Tensor> parameters, Communicator& communicator, Options options);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // true before the backward of a step's last micro-batch: its hooks start the sums. Before
  // the other micro-batches false: gradients accumulate locally, nothing is sent.
  void set_sync(bool sync);
  // After that backward: starts what is left and waits for every sum.
  void finish();

  // Whole sums: parameter i's summed gradient, a view of its bucket (valid until the next step).
  at::Tensor sum(size_t parameter) const;
  // Sharded: this rank's part of bucket b's sum, and the parameter elements it covers.
  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  const at::Tensor& shard(size_t bucket) const { return buckets_[bucket].shard; }
  const std::vector<Segment>& segments(size_t bucket) const { return buckets_[bucket].segments; }
  // Sharded: every rank's part of bucket b gathered into `whole`'s flat buffer (a collective);
  // returns the views of each parameter in it (flattened order, parameter i's numel).
  void gather_bucket(size_t bucket, const at::Tensor& part, at::Tensor& whole);
  at::Tensor bucket_view(size_t bucket, const at::Tensor& whole, size_t parameter) const;
  int64_t bucket_numel(size_t bucket) const { return buckets_[bucket].flat.numel(); }
  const std::vector<size_t>& bucket_parameters(size_t bucket) const { return buckets_[bucket].parameters; }

 private:
  struct Bucket {
    std::vector<size_t> parameters;
    std::vector<int64_t> offsets;  // of each parameter in `flat`
    at::Tensor flat;               // padded to a multiple of the world size when sharded
    at::Tensor shard;              // sharded: this rank's part of the sum
    std::vector<Segment> segments;
    int64_t pending = 0;  // parameters not yet ready this step
    c10::intrusive_ptr<c10d::Work> work;
  };

  void mark_ready(size_t parameter);
  void start(Bucket& bucket);
  // Parameter i's gradient into its bucket slice (added to the earlier micro-batches' part).
  void take_gradient(size_t parameter);

  std::vector<at::Tensor> parameters_;
  Communicator& communicator_;
  Options options_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, position_in_bucket_;
  std::vector<bool> ready_;
  std::vector<bool> holds_part_;  // the bucket slice holds earlier micro-batches' gradient
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  size_t next_to_start_ = 0;
  bool sync_ = false;
  std::mutex mutex_;  // hooks run on the autograd engine's threads
  // The hooks outlive this object (the accumulators belong to the parameters): they reach it
  // through this pointer, which the destructor clears.
  std::shared_ptr<GradientReducer*> self_;
};

}  // namespace lintime::train
