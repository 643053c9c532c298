// GraphedTrainingStep (see the header): at::cuda::CUDAGraph around one whole training step.
#include "train/graphed_step.h"

#include "core/error.h"

#include <ATen/ATen.h>

#include <map>

#if LINTIME_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace lintime::train {

#if LINTIME_WITH_CUDA
namespace {

// Forward, backward, clipping and update: the step as the trainer runs it for one micro-batch.
GraphedTrainingStep::Outputs whole_step(WeightUpdate& weights, const GraphedTrainingStep::Loss& loss_of_batch,
                                        double grad_clip, double lr) {
  weights.begin_micro_batch(true);
  at::Tensor loss = loss_of_batch();
  loss.backward();
  weights.end_micro_batch(true);
  GraphedTrainingStep::Outputs outputs;
  outputs.loss = loss.detach();
  if (grad_clip > 0) outputs.grad_norm = weights.clip(grad_clip);
  weights.step(lr);
  return outputs;
}

// after − before, per count: what one recorded step advances.
AdamW::StepCounts advance_of(const AdamW::StepCounts& before, const AdamW::StepCounts& after) {
  AdamW::StepCounts advance;
  advance.calls = after.calls - before.calls;
  for (size_t i = 0; i < after.per_parameter.size(); ++i)
    advance.per_parameter.push_back(after.per_parameter[i] - before.per_parameter[i]);
  return advance;
}

AdamW::StepCounts advanced(AdamW::StepCounts counts, const AdamW::StepCounts& advance) {
  counts.calls += advance.calls;
  for (size_t i = 0; i < counts.per_parameter.size() && i < advance.per_parameter.size(); ++i)
    counts.per_parameter[i] += advance.per_parameter[i];
  return counts;
}

}  // namespace

struct GraphedTrainingStep::Impl {
  struct Recording {
    at::cuda::CUDAGraph graph;
    Outputs outputs;  // in the graph's memory pool, rewritten by each replay
    AdamW::StepCounts advance;
  };
  Impl(WeightUpdate& weights, const c10::Device& device, double grad_clip)
      : weights(weights), device(device), grad_clip(grad_clip),
        stream(c10::cuda::getStreamFromPool(false, device.index())) {}
  WeightUpdate& weights;
  c10::Device device;
  double grad_clip;
  c10::cuda::CUDAStream stream;
  at::Tensor lr;  // fp32 scalar the update reads
  std::map<std::string, std::unique_ptr<Recording>> recordings;
};
#else
struct GraphedTrainingStep::Impl {
  std::map<std::string, int> recordings;
};
#endif

GraphedTrainingStep::GraphedTrainingStep(WeightUpdate& weights, const c10::Device& device, double grad_clip) {
#if LINTIME_WITH_CUDA
  LINTIME_CHECK(device.is_cuda(), "train: CUDA graphs need a CUDA device, got ", device.str());
  LINTIME_CHECK(weights.capturable(), "train: this run's weight update cannot be captured in a CUDA graph");
  impl_ = std::make_unique<Impl>(weights, device, grad_clip);
  impl_->lr = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
  weights.read_lr_from(impl_->lr);
#else
  fail("train: CUDA graphs need a build with CUDA");
#endif
}

GraphedTrainingStep::~GraphedTrainingStep() = default;

int64_t GraphedTrainingStep::recordings() const { return static_cast<int64_t>(impl_->recordings.size()); }

GraphedTrainingStep::Outputs GraphedTrainingStep::run(const std::string& shape, double lr, const Loss& loss) {
#if LINTIME_WITH_CUDA
  Impl& impl = *impl_;
  const c10::cuda::CUDAGuard device_guard(impl.device);
  impl.lr.fill_(lr);
  const auto found = impl.recordings.find(shape);
  if (found != impl.recordings.end()) {
    Impl::Recording& recording = *found->second;
    recording.graph.replay();
    impl.weights.set_step_counts(advanced(impl.weights.step_counts(), recording.advance));
    Outputs outputs;
    outputs.loss = recording.outputs.loss.clone();
    if (recording.outputs.grad_norm.defined()) outputs.grad_norm = recording.outputs.grad_norm.clone();
    return outputs;
  }
  auto recording = std::make_unique<Impl::Recording>();
  Outputs outputs;
  c10::cuda::device_synchronize();  // the staged batch and the learning rate are in place
  {
    const c10::cuda::CUDAStreamGuard stream_guard(impl.stream);
    outputs = whole_step(impl.weights, loss, impl.grad_clip, lr);  // the real step for this batch
    outputs.loss = outputs.loss.clone();
    impl.weights.zero_gradients();  // the recording's backward makes its gradients in its pool
    c10::cuda::device_synchronize();
    const AdamW::StepCounts before = impl.weights.step_counts();
    try {
      recording->graph.capture_begin();
      recording->outputs = whole_step(impl.weights, loss, impl.grad_clip, lr);
      recording->graph.capture_end();
    } catch (const std::exception& error) {
      std::string message = error.what();
      message = message.substr(0, message.find('\n'));  // c10 errors append a backtrace
      fail("cannot record the training step as a CUDA graph (train with --cuda-graph off): ", message);
    }
    recording->advance = advance_of(before, impl.weights.step_counts());
    impl.weights.set_step_counts(before);  // the recording ran no update
  }
  c10::cuda::device_synchronize();
  impl.recordings.emplace(shape, std::move(recording));
  return outputs;
#else
  fail("train: CUDA graphs need a build with CUDA");
#endif
}

bool training_graphs_compiled() {
#if LINTIME_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace lintime::train
