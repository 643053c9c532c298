// Learning-rate schedules and their factory.
#include "train/lr_schedule.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace lintime::train {

ConstantLr::ConstantLr(double lr) : lr_(lr) {
  LINTIME_CHECK(lr >= 0, "lr schedule constant: lr must be >= 0, got ", lr);
}

double ConstantLr::lr_at(int64_t) const { return lr_; }

WarmupCosineLr::WarmupCosineLr(double lr, int64_t warmup_steps, int64_t total_steps, double min_lr_ratio)
    : lr_(lr), warmup_steps_(warmup_steps), total_steps_(total_steps), min_lr_ratio_(min_lr_ratio) {
  LINTIME_CHECK(lr >= 0, "lr schedule warmup_cosine: lr must be >= 0, got ", lr);
  LINTIME_CHECK(warmup_steps >= 0, "lr schedule warmup_cosine: warmup_steps must be >= 0, got ",
                warmup_steps);
  LINTIME_CHECK(total_steps > 0 && total_steps >= warmup_steps,
                "lr schedule warmup_cosine: total_steps must be > 0 and >= warmup_steps (",
                warmup_steps, "), got ", total_steps);
  LINTIME_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1,
                "lr schedule warmup_cosine: min_lr_ratio must be in [0, 1], got ", min_lr_ratio);
}

double WarmupCosineLr::lr_at(int64_t step) const {
  step = std::max<int64_t>(step, 0);
  if (step < warmup_steps_) return lr_ * static_cast<double>(step + 1) / static_cast<double>(warmup_steps_);
  const double min_lr = min_lr_ratio_ * lr_;
  const int64_t decay_steps = total_steps_ - warmup_steps_;
  if (decay_steps == 0) return min_lr;
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup_steps_) / static_cast<double>(decay_steps));
  const double coefficient = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  return min_lr + coefficient * (lr_ - min_lr);
}

EpochCosineLr::EpochCosineLr(double lr, int64_t steps_per_epoch, int64_t epochs, double eta_min)
    : lr_(lr), steps_per_epoch_(steps_per_epoch), epochs_(epochs), eta_min_(eta_min) {
  LINTIME_CHECK(lr >= 0, "lr schedule epoch_cosine: lr must be >= 0, got ", lr);
  LINTIME_CHECK(steps_per_epoch > 0, "lr schedule epoch_cosine: steps_per_epoch must be > 0, got ",
                steps_per_epoch);
  LINTIME_CHECK(epochs > 0, "lr schedule epoch_cosine: epochs must be > 0, got ", epochs);
}

double EpochCosineLr::lr_at_epoch(int64_t epoch) const {
  // CosineAnnealingLR's closed form; its recursive update equals it up to rounding.
  const double phase = static_cast<double>(std::max<int64_t>(epoch, 0)) / static_cast<double>(epochs_);
  return eta_min_ + (lr_ - eta_min_) * 0.5 * (1.0 + std::cos(std::numbers::pi * phase));
}

double EpochCosineLr::lr_at(int64_t step) const {
  return lr_at_epoch(std::max<int64_t>(step, 0) / steps_per_epoch_);
}

std::unique_ptr<LrSchedule> make_lr_schedule(const std::string& name, const LrScheduleOptions& options) {
  if (name == "constant") return std::make_unique<ConstantLr>(options.lr);
  if (name == "warmup_cosine" || name == "cosine")
    return std::make_unique<WarmupCosineLr>(options.lr, options.warmup_steps, options.total_steps,
                                            options.min_lr_ratio);
  if (name == "epoch_cosine" || name == "cosine_epoch")
    return std::make_unique<EpochCosineLr>(options.lr, options.steps_per_epoch, options.epochs);
  fail("lr schedule: unknown name '", name, "' (expected constant, warmup_cosine or epoch_cosine)");
}

}  // namespace lintime::train
