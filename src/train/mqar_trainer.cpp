// The MQAR training loop. Determinism: the batch of step s is a pure function of
// (data seed, s) and the model of (train.seed), so a run resumed from a checkpoint ends with
// the same weights as an uninterrupted one on the CPU.
#include "train/mqar_trainer.h"

#include "core/device.h"
#include "core/error.h"
#include "core/progress.h"
#include "data/mqar_metric.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/grad_clip.h"
#include "train/lr_schedule.h"
#include "train/metrics_log.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>

namespace lintime::train {
namespace fs = std::filesystem;

// Reseeds the device's default generator from (seed, step) before a training forward, so the
// dropout masks of step s are the same in a resumed run as in an uninterrupted one.
void seed_dropout_for_step(const c10::Device& device, uint64_t seed, int64_t step) {
  uint64_t mixed = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step) + 0x632BE59BD9B4E019ULL;
  mixed = (mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9ULL;  // splitmix64 finaliser
  mixed = (mixed ^ (mixed >> 27)) * 0x94D049BB133111EBULL;
  mixed ^= mixed >> 31;
  at::Generator generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_current_seed(mixed);
}

data::MqarDataset make_train_dataset(const MqarTrainConfig& config) {
  return data::MqarDataset(config.data.train_segments, config.data.seed * 2 + 1, config.optim.batch_size);
}

data::MqarDataset make_test_dataset(const MqarTrainConfig& config) {
  return data::MqarDataset(config.data.test_segments, config.data.seed * 2 + 2, config.optim.test_batch_size);
}

MqarEvaluation evaluate_mqar(models::MqarModel& model, const data::MqarDataset& test,
                             const c10::Device& device) {
  c10::NoGradGuard no_grad;
  data::MqarAccuracy accuracy(test.num_segments());
  for (int64_t segment = 0; segment < test.num_segments(); ++segment) {
    for (int64_t batch = 0; batch < test.num_batches(segment); ++batch) {
      auto examples = test.batch(segment, batch);
      if (!device.is_cpu()) model.check_inputs(examples.inputs);
      auto logits = model.forward(examples.inputs.to(device));
      accuracy.add(segment, logits, examples.labels.to(device));
    }
  }
  MqarEvaluation result;
  result.accuracy = accuracy.overall();
  result.segment_accuracy = accuracy.per_segment();
  result.examples = accuracy.count();
  for (const auto& segment : test.segments()) result.segment_names.push_back(data::describe(segment));
  return result;
}

namespace {

nlohmann::json evaluation_json(const MqarEvaluation& evaluation) {
  nlohmann::json segments = nlohmann::json::array();
  for (size_t i = 0; i < evaluation.segment_accuracy.size(); ++i)
    segments.push_back({{"segment", evaluation.segment_names[i]}, {"accuracy", evaluation.segment_accuracy[i]}});
  return {{"accuracy", evaluation.accuracy}, {"examples", evaluation.examples}, {"segments", segments}};
}

std::unique_ptr<LrSchedule> schedule_for(const MqarTrainConfig& config, int64_t steps_per_epoch,
                                         int64_t total_steps) {
  LrScheduleOptions options;
  options.lr = config.optim.lr;
  options.warmup_steps = config.optim.warmup_steps;
  options.total_steps = total_steps;
  options.min_lr_ratio = config.optim.min_lr_ratio;
  options.steps_per_epoch = steps_per_epoch;
  options.epochs = config.optim.epochs;
  return make_lr_schedule(config.optim.schedule, options);
}

}  // namespace

MqarTrainResult train_mqar(const MqarTrainConfig& config, const MqarTrainOptions& options) {
  const auto wall_start = std::chrono::steady_clock::now();
  const c10::Device device = resolve_device(options.device);
  const auto train_data = make_train_dataset(config);
  const auto test_data = make_test_dataset(config);
  const int64_t steps_per_epoch = train_data.batches_per_epoch();
  const int64_t total_steps = config.total_steps(steps_per_epoch);
  const int64_t eval_every = config.optim.eval_every > 0 ? config.optim.eval_every : steps_per_epoch;
  const int64_t checkpoint_every = config.optim.checkpoint_every > 0 ? config.optim.checkpoint_every : eval_every;

  models::MqarModel model(config.model, config.optim.seed);
  model.to(device);
  model.set_requires_grad(true);
  AdamWOptions adam;
  adam.lr = config.optim.lr;
  adam.beta1 = config.optim.beta1;
  adam.beta2 = config.optim.beta2;
  adam.eps = config.optim.eps;
  adam.weight_decay = config.optim.weight_decay;
  adam.decay_embeddings = config.optim.decay_embeddings;
  AdamW optimizer(model.named_parameters(), adam,
                  config.optim.decay_all_parameters ? decay_all_rule() : DecayRule());
  auto schedule = schedule_for(config, steps_per_epoch, total_steps);

  const fs::path out_dir(options.out_dir);
  const fs::path checkpoint_dir = out_dir / "checkpoint";
  TrainerState state;
  if (options.resume) {
    LINTIME_CHECK(checkpoint_exists(checkpoint_dir.string()), "--resume: no checkpoint in '",
                  checkpoint_dir.string(), "' (expected trainer_state.json from an earlier run)");
    state = load_checkpoint(checkpoint_dir.string(), model, &optimizer);
    LINTIME_CHECK(state.config == config.to_document(), "--resume: the checkpoint in '",
                  checkpoint_dir.string(), "' was trained with a different config (compare its config.json)");
  } else {
    LINTIME_CHECK(!checkpoint_exists(checkpoint_dir.string()), "'", out_dir.string(),
                  "' already holds a checkpoint: pass --resume to continue it or choose another --out");
    fs::create_directories(out_dir);
    state.config = config.to_document();
  }
  MetricsLog metrics((out_dir / "metrics.jsonl").string(), /*append=*/options.resume);

  MqarTrainResult result;
  result.parameters = model.parameter_count();
  result.state_bytes_per_sequence = model.state_bytes_per_sequence();
  result.total_steps = total_steps;
  result.lr = config.optim.lr;
  result.device = device.str();
  // Accuracy bookkeeping that resumes with the run: kept in trainer_state.json's "progress".
  double last_accuracy = state.progress.value("last_accuracy", NAN);
  bool reached_target = state.progress.value("reached_target", false);
  state.rng = {{"model_seed", config.optim.seed}, {"train_data_seed", train_data.seed()},
               {"test_data_seed", test_data.seed()}};

  auto save = [&] {
    state.epoch = state.step / steps_per_epoch;
    state.data_position = state.step % steps_per_epoch;
    state.progress = {{"last_accuracy", last_accuracy}, {"reached_target", reached_target}};
    save_checkpoint(checkpoint_dir.string(), model, &optimizer, state);
  };
  const int64_t last_step = options.stop_after_steps > 0 ? std::min(total_steps, options.stop_after_steps) : total_steps;
  ProgressOptions progress_options;
  progress_options.label = "train";
  progress_options.total = total_steps;
  progress_options.log_every_steps = std::max<int64_t>(config.optim.log_every, total_steps / 20);
  ProgressReporter progress(progress_options);
  double tokens_since = 0;
  auto rate_start = std::chrono::steady_clock::now();
  double loss_value = NAN;

  while (state.step < last_step && !reached_target) {
    const double lr = schedule->lr_at(state.step);
    optimizer.set_lr(lr);
    auto batch = train_data.training_batch_at_step(state.step);
    if (!device.is_cpu()) model.check_inputs(batch.inputs);  // on the host: no wait for the device
    auto inputs = batch.inputs.to(device);
    auto labels = batch.labels.to(device);
    if (config.model.embed_dropout > 0) seed_dropout_for_step(device, config.optim.seed, state.step);
    auto logits = model.forward(inputs, /*training=*/true);
    auto loss = data::mqar_loss(logits, labels);
    loss.backward();
    at::Tensor grad_norm;
    if (config.optim.grad_clip > 0) grad_norm = clip_grad_norm(model.named_parameters(), config.optim.grad_clip);
    optimizer.step();
    optimizer.zero_grad();
    ++state.step;
    tokens_since += static_cast<double>(inputs.numel());

    if (state.step % config.optim.log_every == 0 || state.step == last_step) {
      loss_value = loss.item<double>();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - rate_start).count();
      const double tokens_per_second = seconds > 0 ? tokens_since / seconds : 0;
      tokens_since = 0;
      rate_start = std::chrono::steady_clock::now();
      nlohmann::json record = {{"step", state.step}, {"epoch", (state.step - 1) / steps_per_epoch},
                               {"loss", loss_value}, {"lr", lr}, {"tokens_per_s", tokens_per_second}};
      if (grad_norm.defined()) record["grad_norm"] = grad_norm.item<double>();
      metrics.write(record);
      progress.update(state.step, {{"loss", loss_value}, {"acc", last_accuracy}, {"tok/s", tokens_per_second}});
    }
    const bool evaluate_now = state.step % eval_every == 0 || state.step == total_steps;
    if (evaluate_now) {
      auto evaluation = evaluate_mqar(model, test_data, device);
      last_accuracy = evaluation.accuracy;
      state.best_accuracy = std::max(state.best_accuracy, evaluation.accuracy);
      reached_target = evaluation.accuracy >= config.optim.target_accuracy;
      auto record = evaluation_json(evaluation);
      record["step"] = state.step;
      record["eval"] = true;
      metrics.write(record);
      progress.message("step " + std::to_string(state.step) + ": test accuracy " +
                    std::to_string(evaluation.accuracy));
    }
    if (state.step % checkpoint_every == 0 || reached_target) save();
  }
  progress.finish();
  if (state.step < total_steps && !reached_target) result.stopped_early = true;
  save();

  result.evaluation = evaluate_mqar(model, test_data, device);
  result.best_accuracy = std::max(state.best_accuracy, result.evaluation.accuracy);
  result.reached_target = result.evaluation.accuracy >= config.optim.target_accuracy;
  result.steps = state.step;
  result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();

  nlohmann::json summary = {{"evaluation", evaluation_json(result.evaluation)},
                            {"best_accuracy", result.best_accuracy}, {"steps", result.steps},
                            {"total_steps", result.total_steps}, {"reached_target", result.reached_target},
                            {"stopped_early", result.stopped_early}, {"wall_seconds", result.wall_seconds},
                            {"parameters", result.parameters},
                            {"state_bytes_per_sequence", result.state_bytes_per_sequence},
                            {"lr", result.lr}, {"device", result.device}};
  const fs::path result_path = out_dir / "result.json";
  {
    std::ofstream out(result_path.string() + ".tmp");
    out << summary.dump(2) << "\n";
    LINTIME_CHECK(out.good(), "cannot write '", result_path.string(), "'");
  }
  fs::rename(result_path.string() + ".tmp", result_path);
  return result;
}

MqarEvaluation evaluate_mqar_checkpoint(const std::string& dir, const std::string& device_name,
                                        MqarTrainConfig* config_out) {
  fs::path checkpoint_dir(dir);
  if (!checkpoint_exists(checkpoint_dir.string()) && checkpoint_exists((checkpoint_dir / "checkpoint").string()))
    checkpoint_dir /= "checkpoint";
  LINTIME_CHECK(checkpoint_exists(checkpoint_dir.string()), "eval: '", dir,
                "' is not a lintime checkpoint (expected config.json and model.safetensors)");
  auto config = MqarTrainConfig::from_document(read_trainer_state(checkpoint_dir.string()).config);
  const c10::Device device = resolve_device(device_name);
  models::MqarModel model(config.model, config.optim.seed);
  load_checkpoint(checkpoint_dir.string(), model, nullptr);
  model.to(device);
  if (config_out) *config_out = config;
  return evaluate_mqar(model, make_test_dataset(config), device);
}

}  // namespace lintime::train
