// The sharded form of WeightUpdate (weight_update.h): ZeRO stage 1 over the gradient buckets.
#pragma once

#include "train/weight_update.h"

#include <memory>

namespace lintime::train {

// `model` holds fp32/fp64 parameters that every rank already shares (rank 0's); it is
// converted to the compute dtype. Needs options.communicator.
std::unique_ptr<WeightUpdate> make_sharded_weight_update(layers::Module& model, const WeightUpdateOptions& options);

}  // namespace lintime::train
