// The [train] keys every training task shares (optimiser, schedule, cadence, seed): read
// strictly and validated in one place, and written back in the same form.
#pragma once

#include "core/config_reader.h"
#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace lintime::train {

// Reads lr, weight_decay, decay_embeddings, decay_all_parameters, beta1, beta2, eps, schedule,
// warmup_steps, min_lr_ratio, grad_clip, eval_every, checkpoint_every, log_every, max_steps,
// seed and shard_optimizer into `settings` (absent keys keep its values) and validates them; returns those names
// for StrictObject::finish. Throws lintime::Error naming the key.
std::vector<std::string> read_optimizer_fields(config::StrictObject& train, OptimSettings& settings);

// The same keys as read_optimizer_fields reads, from `settings`.
nlohmann::json optimizer_fields_json(const OptimSettings& settings);

}  // namespace lintime::train
