#include "train/optim_fields.h"

#include "core/error.h"

#include <cmath>

namespace lintime::train {

std::vector<std::string> read_optimizer_fields(config::StrictObject& train, OptimSettings& o) {
  o.max_steps = train.get("max_steps", o.max_steps);
  o.lr = train.get("lr", o.lr);
  o.weight_decay = train.get("weight_decay", o.weight_decay);
  o.decay_embeddings = train.get("decay_embeddings", o.decay_embeddings);
  o.decay_all_parameters = train.get("decay_all_parameters", o.decay_all_parameters);
  o.beta1 = train.get("beta1", o.beta1);
  o.beta2 = train.get("beta2", o.beta2);
  o.eps = train.get("eps", o.eps);
  o.schedule = train.get("schedule", o.schedule);
  o.warmup_steps = train.get("warmup_steps", o.warmup_steps);
  o.min_lr_ratio = train.get("min_lr_ratio", o.min_lr_ratio);
  o.grad_clip = train.get("grad_clip", o.grad_clip);
  o.eval_every = train.get("eval_every", o.eval_every);
  o.checkpoint_every = train.get("checkpoint_every", o.checkpoint_every);
  o.log_every = train.get("log_every", o.log_every);
  o.shard_optimizer = train.get("shard_optimizer", o.shard_optimizer);
  const int64_t seed = train.get("seed", static_cast<int64_t>(o.seed));
  LINTIME_CHECK(seed >= 0, "config key \"train.seed\": must be >= 0, got ", seed);
  o.seed = static_cast<uint64_t>(seed);
  LINTIME_CHECK(o.max_steps >= 0, "config key \"train.max_steps\": must be >= 0, got ", o.max_steps);
  LINTIME_CHECK(o.lr > 0 && std::isfinite(o.lr), "config key \"train.lr\": must be a positive number, got ", o.lr);
  LINTIME_CHECK(o.weight_decay >= 0, "config key \"train.weight_decay\": must be >= 0, got ", o.weight_decay);
  LINTIME_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
                "config keys \"train.beta1\" and \"train.beta2\": must lie in [0, 1)");
  LINTIME_CHECK(o.eps >= 0, "config key \"train.eps\": must be >= 0, got ", o.eps);
  LINTIME_CHECK(std::isfinite(o.grad_clip), "config key \"train.grad_clip\": expected a finite number (<= 0: no ",
                "clipping), got ", o.grad_clip);
  LINTIME_CHECK(o.warmup_steps >= 0, "config key \"train.warmup_steps\": must be >= 0, got ", o.warmup_steps);
  LINTIME_CHECK(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "config key \"train.min_lr_ratio\": must lie in [0, 1], got ",
                o.min_lr_ratio);
  LINTIME_CHECK(o.eval_every >= 0 && o.checkpoint_every >= 0 && o.log_every >= 1,
                "config keys \"train.eval_every\" and \"train.checkpoint_every\": must be >= 0, and \"train.log_every\" >= 1");
  LINTIME_CHECK(o.schedule == "constant" || o.schedule == "warmup_cosine" || o.schedule == "epoch_cosine",
                "config key \"train.schedule\": must be one of constant, warmup_cosine, epoch_cosine, got '",
                o.schedule, "'");
  return {"max_steps", "lr", "weight_decay", "decay_embeddings", "decay_all_parameters", "beta1", "beta2", "eps",
          "schedule", "warmup_steps", "min_lr_ratio", "grad_clip", "eval_every", "checkpoint_every", "log_every",
          "seed", "shard_optimizer"};
}

nlohmann::json optimizer_fields_json(const OptimSettings& o) {
  nlohmann::json fields = {{"max_steps", o.max_steps}, {"lr", o.lr}, {"weight_decay", o.weight_decay},
          {"decay_embeddings", o.decay_embeddings}, {"decay_all_parameters", o.decay_all_parameters},
          {"beta1", o.beta1}, {"beta2", o.beta2}, {"eps", o.eps}, {"schedule", o.schedule},
          {"warmup_steps", o.warmup_steps}, {"min_lr_ratio", o.min_lr_ratio}, {"grad_clip", o.grad_clip},
          {"eval_every", o.eval_every}, {"checkpoint_every", o.checkpoint_every}, {"log_every", o.log_every},
          {"seed", o.seed}};
  if (o.shard_optimizer) fields["shard_optimizer"] = true;  // absent when false: older runs' configs stay equal
  return fields;
}

}  // namespace lintime::train
