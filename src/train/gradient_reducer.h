// The gradient sum of data-parallel training (PyTorch DDP's reducer, written again in C++:
// LibTorch has none). Parameters are grouped into buckets of about `bucket_bytes`, in reverse
// order (the backward produces the last layers' gradients first); a hook on each parameter's
// gradient accumulator marks it ready, and a bucket whose parameters are all ready is copied
// into one flat buffer and summed across ranks at once, while the backward goes on. Buckets
// start in index order on every rank (collectives must match), and `finish` starts those no
// hook started, waits for all, and hands the sums back.
//
// Mixed precision: the sums run in the master weights' dtype (fp32 for bf16/fp16 compute), and
// a bucket takes each parameter's gradient together with what earlier micro-batches left in its
// master's gradient, so that accumulation and the sum need no second pass. The summed gradients
// stay in the buckets and the masters' .grad are views of them.
#pragma once

#include "train/distributed.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
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
  // `compute[i]` receives its gradient from the backward; `master[i]` (the same tensor when
  // compute and master dtypes agree) keeps gradients between micro-batches and gets the sum.
  GradientReducer(std::vector<at::Tensor> compute, std::vector<at::Tensor> master, Communicator& communicator,
                  int64_t bucket_bytes);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // true before the backward of a step's last micro-batch: its hooks start the sums. Before
  // the other micro-batches false: gradients accumulate locally, nothing is sent.
  void set_sync(bool sync);
  // After that backward: starts what is left, waits, and sets every master's .grad to the sum.
  void finish();

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> parameters;
    std::vector<int64_t> offsets;  // of each parameter in `flat`
    at::Tensor flat;
    int64_t pending = 0;  // parameters not yet ready this step
    c10::intrusive_ptr<c10d::Work> work;
  };

  void mark_ready(size_t parameter);
  void start(Bucket& bucket);
  void start_ready_buckets();

  std::vector<at::Tensor> compute_, master_;
  Communicator& communicator_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<bool> ready_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  size_t next_to_start_ = 0;
  bool sync_ = false;
  std::mutex mutex_;  // hooks run on the autograd engine's threads
  // The hooks outlive this object (the accumulators belong to the parameters): they reach it
  // through this pointer, which the destructor clears.
  std::shared_ptr<GradientReducer*> self_;
};

}  // namespace lintime::train
