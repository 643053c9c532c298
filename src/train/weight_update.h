// The weights a training run updates, behind what the loop asks of them: gradients collected
// over micro-batches (and summed across ranks when distributed), their norm, clipping, the
// AdamW step, and what a checkpoint stores. Two forms:
//   replicated  the model's parameters, or fp32 master copies of them for bf16/fp16 compute,
//               and AdamW's moments, whole on every rank (gradients all-reduced: DDP);
//   sharded     (train.shard_optimizer, ZeRO stage 1) each rank keeps the master weights and
//               moments of its 1/W of every gradient bucket only: gradients are
//               reduce-scattered, each rank steps its part, and the updated weights are
//               all-gathered into every rank's parameters.
#pragma once

#include "layers/module.h"
#include "train/adamw.h"
#include "train/checkpoint.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

namespace lintime::train {

class Communicator;

class WeightUpdate {
 public:
  virtual ~WeightUpdate() = default;
  // Around each micro-batch's backward; `last`: the step's last, whose gradients are summed.
  virtual void begin_micro_batch(bool last) = 0;
  virtual void end_micro_batch(bool last) = 0;
  // The step's gradients' global L2 norm (fp32 at least), and clipping to `max_norm` (returns
  // the norm before), as torch.nn.utils.clip_grad_norm_.
  virtual at::Tensor grad_norm() = 0;
  virtual at::Tensor clip(double max_norm) = 0;
  virtual void scale_gradients(double factor) = 0;
  // AdamW at `lr`, then the model's parameters take the new weights.
  virtual void step(double lr) = 0;
  virtual void zero_gradients() = 0;
  // The weights (under the model's names, whole) and the optimizer state, for a checkpoint.
  // Sharded: a collective (every rank must call it); the tensors are whole on every rank.
  virtual CheckpointContents checkpoint_contents() = 0;
  // The optimizer state of the checkpoint in `dir` (the weights are already in the model).
  virtual void load_optimizer(const std::string& dir) = 0;
  // Bytes this rank holds for the update: master weights (when separate from the parameters)
  // and AdamW's moments once they exist.
  virtual int64_t state_bytes() const = 0;

  // CUDA-graph capture of the whole step (train/graphed_step.h). Capturable: an update whose
  // step needs nothing from the host between steps (the replicated form with the fused AdamW;
  // not a distributed one, whose gradients cross processes). Once read_lr_from is called, the
  // update takes its learning rate from that fp32 device scalar instead of step()'s argument.
  // The host counts a step advances (AdamW's steps) are read and set around a capture, and
  // advanced by the graph's owner at each replay.
  virtual bool capturable() const { return false; }
  virtual void read_lr_from(const at::Tensor& lr);
  virtual AdamW::StepCounts step_counts() const;
  virtual void set_step_counts(const AdamW::StepCounts& counts);
};

struct WeightUpdateOptions {
  at::ScalarType compute_dtype = at::kFloat;  // bf16 / fp16: fp32 master weights
  bool master_weights = true;                 // false (bf16): AdamW on the bf16 parameters
  AdamWOptions adam;
  DecayRule decays;  // empty: default_decay_rule(adam.decay_embeddings)
  Communicator* communicator = nullptr;
  int64_t bucket_bytes = 25 << 20;
  bool shard = false;  // needs a communicator
};

// `model` must hold fp32 or fp64 parameters on the training device; it is converted to the
// compute dtype. Distributed: every rank starts from rank 0's weights (parameter counts and a
// checksum compared across ranks).
std::unique_ptr<WeightUpdate> make_weight_update(layers::Module& model, const WeightUpdateOptions& options);

}  // namespace lintime::train
