// Learning-rate schedules at their key steps; the per-epoch cosine against torch
// CosineAnnealingLR's recursive update, stepped once per epoch.
#include "train/lr_schedule.h"

#include "core/error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

namespace {

using namespace lintime::train;

TEST(LrSchedule, Constant) {
  ConstantLr schedule(3e-4);
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 3e-4);
  EXPECT_DOUBLE_EQ(schedule.lr_at(123456), 3e-4);
}

TEST(LrSchedule, WarmupCosine) {
  WarmupCosineLr schedule(1.0, 10, 110, 0.1);
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 0.1);   // (0 + 1) / 10
  EXPECT_DOUBLE_EQ(schedule.lr_at(4), 0.5);
  EXPECT_DOUBLE_EQ(schedule.lr_at(9), 1.0);   // warmup ends at the full rate
  EXPECT_DOUBLE_EQ(schedule.lr_at(10), 1.0);  // decay starts from it
  EXPECT_NEAR(schedule.lr_at(60), 0.55, 1e-15);  // halfway: the mean of lr and min_lr
  EXPECT_NEAR(schedule.lr_at(35), 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi / 4)), 1e-15);
  EXPECT_NEAR(schedule.lr_at(110), 0.1, 1e-15);
  EXPECT_NEAR(schedule.lr_at(500), 0.1, 1e-15);
  for (int64_t step = 11; step <= 110; ++step) EXPECT_LE(schedule.lr_at(step), schedule.lr_at(step - 1));

  WarmupCosineLr no_warmup(2.0, 0, 100);
  EXPECT_DOUBLE_EQ(no_warmup.lr_at(0), 2.0);
  EXPECT_NEAR(no_warmup.lr_at(100), 0.0, 1e-15);
}

TEST(LrSchedule, EpochCosineMatchesCosineAnnealingLR) {
  const double lr = 1e-3;
  const int64_t epochs = 7, steps_per_epoch = 13;
  EpochCosineLr schedule(lr, steps_per_epoch, epochs);
  // torch CosineAnnealingLR(T_max = epochs, eta_min = 0), recursive form, one step per epoch.
  double torch_lr = lr;
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    if (epoch > 0) {
      const double T = static_cast<double>(epochs);
      torch_lr = (1 + std::cos(std::numbers::pi * epoch / T)) / (1 + std::cos(std::numbers::pi * (epoch - 1) / T)) *
                 torch_lr;
    }
    for (int64_t within = 0; within < steps_per_epoch; ++within)
      EXPECT_NEAR(schedule.lr_at(epoch * steps_per_epoch + within), torch_lr, 1e-15)
          << "epoch " << epoch << " step " << within;
  }
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), lr);
  EXPECT_DOUBLE_EQ(schedule.lr_at_epoch(0), lr);
  EpochCosineLr even(1.0, 5, 4);
  EXPECT_NEAR(even.lr_at(10), 0.5, 1e-15);  // epoch 2 of 4: half the rate
  EXPECT_NEAR(even.lr_at(19), 0.5 * (1 + std::cos(3 * std::numbers::pi / 4)), 1e-15);
}

TEST(LrSchedule, Factory) {
  LrScheduleOptions options{.lr = 1.0, .warmup_steps = 10, .total_steps = 110, .min_lr_ratio = 0.1,
                            .steps_per_epoch = 5, .epochs = 4};
  EXPECT_EQ(make_lr_schedule("constant", options)->name(), "constant");
  EXPECT_EQ(make_lr_schedule("cosine", options)->name(), "warmup_cosine");
  EXPECT_DOUBLE_EQ(make_lr_schedule("warmup_cosine", options)->lr_at(0), 0.1);
  EXPECT_NEAR(make_lr_schedule("epoch_cosine", options)->lr_at(10), 0.5, 1e-15);
  try {
    make_lr_schedule("linear_decay", options);
    FAIL() << "expected an error";
  } catch (const lintime::Error& error) {
    EXPECT_NE(std::string(error.what()).find("unknown name 'linear_decay'"), std::string::npos);
  }
  EXPECT_THROW(make_lr_schedule("warmup_cosine", {.lr = 1.0, .warmup_steps = 10, .total_steps = 5}),
               lintime::Error);
  EXPECT_THROW(make_lr_schedule("epoch_cosine", {.lr = 1.0}), lintime::Error);
}

}  // namespace
