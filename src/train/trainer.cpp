#include "train/trainer.h"

#include "core/error.h"
#include "core/progress.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/grad_clip.h"
#include "train/lr_schedule.h"
#include "train/metrics_log.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <filesystem>

namespace lintime::train {
namespace fs = std::filesystem;

namespace {

std::unique_ptr<LrSchedule> schedule_for(const OptimSettings& settings, int64_t steps_per_epoch, int64_t total_steps) {
  LrScheduleOptions options;
  options.lr = settings.lr;
  options.warmup_steps = settings.warmup_steps;
  options.total_steps = total_steps;
  options.min_lr_ratio = settings.min_lr_ratio;
  options.steps_per_epoch = steps_per_epoch;
  options.epochs = settings.epochs;
  return make_lr_schedule(settings.schedule, options);
}

}  // namespace

TrainerResult train(TrainingTask& task, const OptimSettings& settings, const TrainerOptions& options) {
  layers::Module& model = task.model();
  const int64_t steps_per_epoch = task.steps_per_epoch();
  const int64_t total_steps = task.total_steps();
  const int64_t eval_every = settings.eval_every > 0 ? settings.eval_every : steps_per_epoch;
  const int64_t checkpoint_every = settings.checkpoint_every > 0 ? settings.checkpoint_every : eval_every;

  AdamWOptions adam;
  adam.lr = settings.lr;
  adam.beta1 = settings.beta1;
  adam.beta2 = settings.beta2;
  adam.eps = settings.eps;
  adam.weight_decay = settings.weight_decay;
  adam.decay_embeddings = settings.decay_embeddings;
  AdamW optimizer(model.named_parameters(), adam, settings.decay_all_parameters ? decay_all_rule() : DecayRule());
  auto schedule = schedule_for(settings, steps_per_epoch, total_steps);

  const fs::path out_dir(options.out_dir);
  const fs::path checkpoint_dir = out_dir / "checkpoint";
  TrainerState state;
  if (options.resume) {
    LINTIME_CHECK(checkpoint_exists(checkpoint_dir.string()), "--resume: no checkpoint in '",
                  checkpoint_dir.string(), "' (expected trainer_state.json from an earlier run)");
    state = load_checkpoint(checkpoint_dir.string(), model, &optimizer);
    LINTIME_CHECK(state.config == task.config_document(), "--resume: the checkpoint in '", checkpoint_dir.string(),
                  "' was trained with a different config (compare its config.json)");
  } else {
    LINTIME_CHECK(!checkpoint_exists(checkpoint_dir.string()), "'", out_dir.string(),
                  "' already holds a checkpoint: pass --resume to continue it or choose another --out");
    fs::create_directories(out_dir);
    state.config = task.config_document();
  }
  MetricsLog metrics((out_dir / "metrics.jsonl").string(), /*append=*/options.resume);

  // Score bookkeeping that resumes with the run: kept in trainer_state.json's "progress".
  double last_score = state.progress.value("last_accuracy", NAN);
  bool reached_target = state.progress.value("reached_target", false);
  state.rng = task.rng_description();
  auto save = [&] {
    state.epoch = state.step / steps_per_epoch;
    state.data_position = state.step % steps_per_epoch;
    state.progress = {{"last_accuracy", last_score}, {"reached_target", reached_target}};
    save_checkpoint(checkpoint_dir.string(), model, &optimizer, state);
  };

  const int64_t last_step = options.stop_after_steps > 0 ? std::min(total_steps, options.stop_after_steps) : total_steps;
  ProgressOptions progress_options;
  progress_options.label = "train";
  progress_options.total = total_steps;
  progress_options.log_every_steps = std::max<int64_t>(settings.log_every, total_steps / 20);
  ProgressReporter progress(progress_options);
  double tokens_since = 0;
  auto rate_start = std::chrono::steady_clock::now();

  while (state.step < last_step && !reached_target) {
    const double lr = schedule->lr_at(state.step);
    optimizer.set_lr(lr);
    int64_t tokens = 0;
    at::Tensor loss = task.training_loss(state.step, &tokens);
    loss.backward();
    at::Tensor grad_norm;
    if (settings.grad_clip > 0) grad_norm = clip_grad_norm(model.named_parameters(), settings.grad_clip);
    optimizer.step();
    optimizer.zero_grad();
    ++state.step;
    tokens_since += static_cast<double>(tokens);

    if (state.step % settings.log_every == 0 || state.step == last_step) {
      const double loss_value = loss.item<double>();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - rate_start).count();
      const double tokens_per_second = seconds > 0 ? tokens_since / seconds : 0;
      tokens_since = 0;
      rate_start = std::chrono::steady_clock::now();
      nlohmann::json record = {{"step", state.step}, {"epoch", (state.step - 1) / steps_per_epoch},
                               {"loss", loss_value}, {"lr", lr}, {"tokens_per_s", tokens_per_second}};
      if (grad_norm.defined()) record["grad_norm"] = grad_norm.item<double>();
      metrics.write(record);
      progress.update(state.step, {{"loss", loss_value}, {task.score_name(), last_score}, {"tok/s", tokens_per_second}});
    }
    if (state.step % eval_every == 0 || state.step == total_steps) {
      TaskEvaluation evaluation = task.evaluate();
      last_score = evaluation.score;
      state.best_score = std::max(state.best_score, evaluation.score);
      reached_target = evaluation.score >= settings.target_accuracy;
      evaluation.record["step"] = state.step;
      evaluation.record["eval"] = true;
      metrics.write(evaluation.record);
      progress.message("step " + std::to_string(state.step) + ": " + evaluation.summary);
    }
    if (state.step % checkpoint_every == 0 || reached_target) save();
  }
  progress.finish();
  TrainerResult result;
  result.stopped_early = state.step < total_steps && !reached_target;
  save();

  result.final_evaluation = task.evaluate();
  result.best_score = std::max(state.best_score, result.final_evaluation.score);
  result.reached_target = result.final_evaluation.score >= settings.target_accuracy;
  result.steps = state.step;
  result.total_steps = total_steps;
  return result;
}

}  // namespace lintime::train
