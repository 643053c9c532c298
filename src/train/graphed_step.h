// The whole training step — forward, backward, gradient clipping and the fused AdamW update —
// recorded once per batch shape as a CUDA graph and replayed (torch.cuda.graphs' whole-network
// capture). MQAR's models are tiny: launched one by one from the host, their few hundred
// kernels per step leave the GPU waiting (BENCHMARKS.md, "MQAR training on a GPU"); replayed,
// they run back to back.
//
// What a recorded step may contain: device work only, on tensors whose addresses stay fixed —
// the task's staged batch buffers (TrainingTask::stage_batch), the parameters, AdamW's moments
// and step counts, and the learning rate, which the update reads from a device scalar
// (WeightUpdate::read_lr_from) that run() fills before each replay. Dropout draws from the
// default CUDA generator, which the graph registers: seeding it before a replay gives the
// masks an eager step would draw.
//
// Lifecycle of a shape: the first run() for it synchronises, runs the real step eagerly on a
// side stream (cuBLAS and the allocator set up that stream's workspaces outside the recording),
// then records the same step, which runs no kernel, and puts back the host counts the
// recording advanced; every later run() replays on the current stream and advances those
// counts as the recorded step would have. Without CUDA, the trainer never builds one.
#pragma once

#include "train/weight_update.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace lintime::train {

class GraphedTrainingStep {
 public:
  struct Outputs {
    at::Tensor loss;       // the step's loss (a fresh tensor)
    at::Tensor grad_norm;  // the norm before clipping; undefined without clipping
  };
  using Loss = std::function<at::Tensor()>;

  // `grad_clip` <= 0: no clipping. The update must be capturable (WeightUpdate::capturable).
  GraphedTrainingStep(WeightUpdate& weights, const c10::Device& device, double grad_clip);
  ~GraphedTrainingStep();
  GraphedTrainingStep(const GraphedTrainingStep&) = delete;
  GraphedTrainingStep& operator=(const GraphedTrainingStep&) = delete;

  // One optimizer step at `lr` on the batch the task staged under `shape`; `loss` computes its
  // loss from the staged buffers (device work only). The caller drops the gradients after
  // it, as after an eager step.
  Outputs run(const std::string& shape, double lr, const Loss& loss);
  // Shapes recorded so far.
  int64_t recordings() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether this build can record training steps (compiled with CUDA).
bool training_graphs_compiled();

}  // namespace lintime::train
