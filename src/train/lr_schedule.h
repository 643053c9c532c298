// Learning-rate schedules, evaluated per optimizer step (step = number of updates done so far,
// so step 0 gives the rate of the first update):
//   constant         lr
//   warmup_cosine    linear warmup over warmup_steps ((step + 1) / warmup_steps * lr), then
//                    cosine decay from lr to min_lr_ratio * lr at total_steps, flat after
//   epoch_cosine     zoology's schedule: torch CosineAnnealingLR(T_max = epochs, eta_min = 0)
//                    stepped once per epoch; constant within an epoch, no warmup
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace lintime::train {

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr_at(int64_t step) const = 0;
  virtual std::string name() const = 0;
};

class ConstantLr final : public LrSchedule {
 public:
  explicit ConstantLr(double lr);
  double lr_at(int64_t step) const override;
  std::string name() const override { return "constant"; }

 private:
  double lr_;
};

class WarmupCosineLr final : public LrSchedule {
 public:
  WarmupCosineLr(double lr, int64_t warmup_steps, int64_t total_steps, double min_lr_ratio = 0.0);
  double lr_at(int64_t step) const override;
  std::string name() const override { return "warmup_cosine"; }

 private:
  double lr_;
  int64_t warmup_steps_;
  int64_t total_steps_;
  double min_lr_ratio_;
};

class EpochCosineLr final : public LrSchedule {
 public:
  EpochCosineLr(double lr, int64_t steps_per_epoch, int64_t epochs, double eta_min = 0.0);
  double lr_at(int64_t step) const override;
  // The rate used throughout epoch `epoch` (0-based).
  double lr_at_epoch(int64_t epoch) const;
  std::string name() const override { return "epoch_cosine"; }

 private:
  double lr_;
  int64_t steps_per_epoch_;
  int64_t epochs_;
  double eta_min_;
};

struct LrScheduleOptions {
  double lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;      // warmup_cosine
  double min_lr_ratio = 0.0;    // warmup_cosine
  int64_t steps_per_epoch = 0;  // epoch_cosine
  int64_t epochs = 0;           // epoch_cosine
};

// "constant", "warmup_cosine" (alias "cosine"), "epoch_cosine" (alias "cosine_epoch").
// Throws lintime::Error naming the schedule for unknown names or invalid options.
std::unique_ptr<LrSchedule> make_lr_schedule(const std::string& name, const LrScheduleOptions& options);

}  // namespace lintime::train
