#include "train/trainer.h"

#include "core/device.h"
#include "core/error.h"
#include "core/progress.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/graphed_step.h"
#include "train/weight_update.h"
#include "train/lr_schedule.h"
#include "train/metrics_log.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
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

std::atomic<int> stop_signal{0};

extern "C" void record_stop_signal(int signal) { stop_signal.store(signal); }

// SIGINT and SIGTERM set a flag while training runs (the loop checks it between steps); the
// previous handlers come back afterwards.
class StopSignals {
 public:
  StopSignals() {
    stop_signal.store(0);
    struct sigaction action {};
    action.sa_handler = record_stop_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &previous_interrupt_);
    ::sigaction(SIGTERM, &action, &previous_terminate_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &previous_interrupt_, nullptr);
    ::sigaction(SIGTERM, &previous_terminate_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int received() const { return stop_signal.load(); }

 private:
  struct sigaction previous_interrupt_ {}, previous_terminate_ {};
};

at::ScalarType compute_dtype_of(const std::string& precision) {
  if (precision == "fp32") return at::kFloat;
  if (precision == "fp64") return at::kDouble;
  if (precision == "bf16") return at::kBFloat16;
  if (precision == "fp16") return at::kHalf;
  fail("train: precision must be one of fp32, fp64, bf16, fp16, got '", precision, "'");
}

// fp16's dynamic loss scale (torch.amp.GradScaler's rules): the loss is multiplied by the
// scale before the backward pass; a step whose gradients overflow is skipped and halves the
// scale; 2000 steps without overflow double it.
struct LossScale {
  double scale = 0;
  int64_t good_steps = 0;
  static constexpr int64_t kGrowthInterval = 2000;
};

// A number kept in trainer_state.json's "progress" (NaN and absent read as `fallback`: JSON
// writes NaN as null).
double progress_number(const nlohmann::json& progress, const char* key, double fallback) {
  const auto found = progress.find(key);
  return found != progress.end() && found->is_number() ? found->get<double>() : fallback;
}

// Whether the run can record its steps as CUDA graphs; otherwise what prevents it.
std::string why_no_cuda_graphs(const TrainingTask& task, const c10::Device& device, int64_t micro_batches,
                               const Communicator* communicator, bool scales_loss, const OptimSettings& settings) {
  if (!training_graphs_compiled()) return "this build has no CUDA";
  if (!device.is_cuda()) return "the run is on " + device.str() + ", not a CUDA device";
  if (!task.stages_batches())
    return "the task cannot stage its batches for a recorded step (MQAR can, with mixers whose GPU training "
           "reads nothing from the host: gsa)";
  if (micro_batches != 1) return "a step has " + std::to_string(micro_batches) + " micro-batches (needs 1)";
  if (communicator != nullptr) return "the run is distributed (gradients cross processes between steps)";
  if (scales_loss) return "fp16's loss scaling decides on the host whether to skip a step";
  if (!settings.fused_adamw) return "the update needs the fused AdamW (train.fused_adamw = true)";
  if (settings.fp32_moments) return "fp32 moments on bf16 weights take the per-parameter update";
  return "";
}

}  // namespace

std::string TrainingTask::stage_batch(int64_t, int64_t*) { fail("train: this task does not stage batches"); }
at::Tensor TrainingTask::staged_loss(const std::string&) { fail("train: this task does not stage batches"); }

TrainerResult train(TrainingTask& task, const OptimSettings& settings, const TrainerOptions& options) {
  layers::Module& model = task.model();
  const int64_t steps_per_epoch = task.steps_per_epoch();
  const int64_t total_steps = task.total_steps();
  const int64_t micro_batches = task.micro_batches();
  LINTIME_CHECK(micro_batches >= 1, "train: a step needs at least one micro-batch, got ", micro_batches);
  const int64_t eval_every = settings.eval_every > 0 ? settings.eval_every : steps_per_epoch;
  const int64_t checkpoint_every = settings.checkpoint_every > 0 ? settings.checkpoint_every : eval_every;
  const at::ScalarType compute_dtype = compute_dtype_of(settings.precision);
  Communicator* const communicator = options.communicator;
  const bool writes = communicator == nullptr || communicator->is_root();  // metrics, checkpoints

  // Whole-step CUDA graphs: decided before anything is written.
  LINTIME_CHECK(options.cuda_graph == "auto" || options.cuda_graph == "on" || options.cuda_graph == "off",
                "--cuda-graph: expected auto, on or off, got '", options.cuda_graph, "'");
  bool records_graphs = false;
  if (options.cuda_graph != "off") {
    const c10::Device model_device = model.named_parameters().front().second.device();
    const std::string why_not = why_no_cuda_graphs(task, model_device, micro_batches, communicator,
                                                   compute_dtype == at::kHalf, settings);
    LINTIME_CHECK(options.cuda_graph == "auto" || why_not.empty(), "--cuda-graph on: cannot record this run's steps: ",
                  why_not);
    records_graphs = why_not.empty();
  }

  LINTIME_CHECK(settings.schedule != "warmup_cosine" || settings.warmup_steps <= total_steps,
                "config key \"train.warmup_steps\": ", settings.warmup_steps, " warm-up steps in a run of ", total_steps,
                " steps (epochs x ", steps_per_epoch, " batches per epoch, or train.max_steps); expected at most ",
                total_steps);
  auto schedule = schedule_for(settings, steps_per_epoch, total_steps);  // before anything is written

  const fs::path out_dir(options.out_dir);
  const fs::path checkpoint_dir = out_dir / "checkpoint";
  LINTIME_CHECK(!fs::exists(out_dir) || fs::is_directory(out_dir), "--out '", out_dir.string(),
                "' is a file, not a folder");
  TrainerState state;
  if (options.resume) {
    LINTIME_CHECK(checkpoint_exists(checkpoint_dir.string()), "--resume: no checkpoint in '",
                  checkpoint_dir.string(), "' (expected trainer_state.json from an earlier run)");
    state = read_trainer_state(checkpoint_dir.string());
    LINTIME_CHECK(state.config == task.config_document(), "--resume: the checkpoint in '", checkpoint_dir.string(),
                  "' was trained with a different config (compare its config.json)");
    // The weights in the dtype they were trained in (fp64 runs keep fp64 checkpoints: read into
    // fp32 they would resume rounded).
    if (compute_dtype == at::kDouble) model.to(model.named_parameters().front().second.device(), at::kDouble);
    state = load_checkpoint(checkpoint_dir.string(), model, nullptr);
  } else {
    LINTIME_CHECK(!checkpoint_exists(checkpoint_dir.string()), "'", out_dir.string(),
                  "' already holds a checkpoint: pass --resume to continue it or choose another --out");
    state.config = task.config_document();
  }

  const c10::Device device = model.named_parameters().front().second.device();
  WeightUpdateOptions update_options;
  update_options.compute_dtype = compute_dtype;
  update_options.master_weights = settings.master_weights;
  if (settings.fp32_moments) update_options.adam.moment_dtype = at::kFloat;
  update_options.adam.lr = settings.lr;
  update_options.adam.beta1 = settings.beta1;
  update_options.adam.beta2 = settings.beta2;
  update_options.adam.eps = settings.eps;
  update_options.adam.weight_decay = settings.weight_decay;
  update_options.adam.decay_embeddings = settings.decay_embeddings;
  update_options.adam.fused = settings.fused_adamw && device.is_cuda();
  if (settings.decay_all_parameters) update_options.decays = decay_all_rule();
  update_options.communicator = communicator;
  update_options.bucket_bytes = options.bucket_bytes;
  update_options.shard = settings.shard_optimizer;
  const auto weights = make_weight_update(model, update_options);
  if (options.resume) weights->load_optimizer(checkpoint_dir.string());
  std::unique_ptr<GraphedTrainingStep> graphed;
  if (records_graphs) graphed = std::make_unique<GraphedTrainingStep>(*weights, device, settings.grad_clip);
  std::unique_ptr<MetricsLog> metrics;
  if (writes) {
    fs::create_directories(out_dir);  // once the run's settings have all been accepted
    if (options.resume) {
      // The run folder as an uninterrupted run's: its log up to the checkpoint, no result yet.
      MetricsLog::truncate_after_step((out_dir / "metrics.jsonl").string(), state.step);
      fs::remove(out_dir / "result.json");
    }
    fs::remove_all(checkpoint_dir.string() + ".tmp");  // left by a kill during a save
    metrics = std::make_unique<MetricsLog>((out_dir / "metrics.jsonl").string(), /*append=*/options.resume);
  }

  // Bookkeeping that resumes with the run: kept in trainer_state.json's "progress".
  double last_score = progress_number(state.progress, "last_accuracy", NAN);
  bool reached_target = state.progress.value("reached_target", false);
  bool evaluated = state.progress.value("evaluated", state.best_score != 0.0);
  LossScale loss_scale;
  loss_scale.scale = progress_number(state.progress, "loss_scale", settings.initial_loss_scale);
  loss_scale.good_steps = static_cast<int64_t>(progress_number(state.progress, "loss_scale_good_steps", 0));
  int64_t skipped_steps = static_cast<int64_t>(progress_number(state.progress, "skipped_steps", 0));
  const bool scales_loss = compute_dtype == at::kHalf;
  state.rng = task.rng_description();
  auto save = [&] {
    if (!options.save_checkpoints) return;
    CheckpointContents contents = weights->checkpoint_contents();  // a collective when sharded
    if (!writes) {
      communicator->barrier("the barrier after rank 0 writes the checkpoint of step " + std::to_string(state.step));
      return;
    }
    state.epoch = state.step / steps_per_epoch;
    state.data_position = state.step % steps_per_epoch;
    state.progress = {{"last_accuracy", last_score}, {"reached_target", reached_target}, {"evaluated", evaluated}};
    if (scales_loss) {
      state.progress["loss_scale"] = loss_scale.scale;
      state.progress["loss_scale_good_steps"] = loss_scale.good_steps;
      state.progress["skipped_steps"] = skipped_steps;
    }
    contents.model_config = task.model_config();
    contents.files = task.checkpoint_files();
    contents.texts = task.checkpoint_texts();
    save_checkpoint(checkpoint_dir.string(), contents, state);
    if (communicator != nullptr) {
      communicator->barrier("the barrier after rank 0 writes the checkpoint of step " + std::to_string(state.step));
    }
  };

  const int64_t last_step = options.stop_after_steps > 0 ? std::min(total_steps, options.stop_after_steps) : total_steps;
  ProgressOptions progress_options;
  progress_options.label = "train";
  progress_options.total = total_steps;
  progress_options.log_every_steps = std::max<int64_t>(settings.log_every, total_steps / 20);
  progress_options.quiet = !writes;
  ProgressReporter progress(progress_options);
  double tokens_since = 0;
  int64_t steps_since = 0;
  auto rate_start = std::chrono::steady_clock::now();
  const StopSignals signals;
  TrainerResult result;
  if (device.is_cuda()) c10::getDeviceAllocator(c10::kCUDA)->resetPeakStats(device.index());

  while (state.step < last_step && !(reached_target && task.stops_at_target())) {
    const double lr = schedule->lr_at(state.step);
    int64_t tokens = 0;
    at::Tensor loss_sum;
    // A signal reaches the ranks at different moments: they agree on it through a maximum
    // started here and read after the step (so that its latency hides behind the step), and
    // stop together after the step in which any of them had seen it.
    Communicator::Pending stop_vote;
    if (communicator != nullptr) {
      communicator->heartbeat(state.step);
      stop_vote = communicator->start_max(signals.received());
    }
    bool step_taken = true;
    at::Tensor grad_norm_before_clip;
    if (graphed) {  // the whole step, replayed
      const std::string shape = task.stage_batch(state.step, &tokens);
      auto outputs = graphed->run(shape, lr, [&] { return task.staged_loss(shape); });
      loss_sum = outputs.loss;
      grad_norm_before_clip = outputs.grad_norm;
    }
    for (int64_t micro = 0; !graphed && micro < micro_batches; ++micro) {
      int64_t micro_tokens = 0;
      weights->begin_micro_batch(micro == micro_batches - 1);
      at::Tensor loss = task.training_loss(state.step, micro, &micro_tokens);
      if (loss.requires_grad()) (scales_loss ? loss * loss_scale.scale : loss).backward();
      weights->end_micro_batch(micro == micro_batches - 1);
      tokens += micro_tokens;
      loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach();
    }
    if (scales_loss) {  // (never graphed)
      weights->scale_gradients(1.0 / loss_scale.scale);
      grad_norm_before_clip = weights->grad_norm();
      step_taken = std::isfinite(grad_norm_before_clip.item<double>());
      if (!step_taken) {
        loss_scale.scale /= 2;
        loss_scale.good_steps = 0;
        ++skipped_steps;
      } else if (++loss_scale.good_steps % LossScale::kGrowthInterval == 0) {
        loss_scale.scale *= 2;
      }
    }
    if (step_taken && !graphed) {
      if (settings.grad_clip > 0) grad_norm_before_clip = weights->clip(settings.grad_clip);
      weights->step(lr);
    }
    weights->zero_gradients();
    ++state.step;
    const int received_signal = communicator != nullptr
                                    ? static_cast<int>(communicator->finish(stop_vote, "agreeing whether to stop"))
                                    : signals.received();
    ++steps_since;
    tokens_since += static_cast<double>(tokens);

    if (state.step % settings.log_every == 0 || state.step == last_step) {
      double loss_value = loss_sum.item<double>();
      double step_tokens = tokens_since;
      if (communicator != nullptr) {  // the step's loss and tokens over every rank
        const auto sums = communicator->sum({loss_value, tokens_since}, "summing the step's loss over the ranks");
        loss_value = sums[0];
        step_tokens = sums[1];
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - rate_start).count();
      const double tokens_per_second = seconds > 0 ? step_tokens / seconds : 0;
      nlohmann::json record = {{"step", state.step}, {"epoch", (state.step - 1) / steps_per_epoch},
                               {"loss", loss_value}, {"lr", lr}, {"tokens_per_s", tokens_per_second},
                               {"step_time_s", steps_since > 0 ? seconds / static_cast<double>(steps_since) : 0.0},
                               {"peak_memory_bytes", peak_memory_bytes(device)}};
      if (task.flops_per_token() > 0) record["model_flops_per_s"] = task.flops_per_token() * tokens_per_second;
      if (grad_norm_before_clip.defined()) record["grad_norm"] = grad_norm_before_clip.item<double>();
      if (scales_loss) record["loss_scale"] = loss_scale.scale, record["skipped_steps"] = skipped_steps;
      if (!step_taken) record["skipped"] = true;
      if (communicator != nullptr) record["world_size"] = communicator->world_size();
      record["optimizer_state_bytes"] = weights->state_bytes();  // this rank's (rank 0's when distributed)
      if (metrics) metrics->write(record);
      progress.update(state.step, {{"loss", loss_value}, {task.score_name(), last_score}, {"tok/s", tokens_per_second}});
      tokens_since = 0;
      steps_since = 0;
      rate_start = std::chrono::steady_clock::now();
    }
    if (options.after_step) options.after_step(state.step);
    if (state.step % eval_every == 0 || state.step == total_steps) {
      TaskEvaluation evaluation = task.evaluate();
      if (communicator != nullptr) evaluation.score = communicator->from_root({evaluation.score}, "sharing rank 0's evaluation")[0];
      last_score = std::isnan(evaluation.shown) ? evaluation.score : evaluation.shown;
      state.best_score = evaluated ? std::max(state.best_score, evaluation.score) : evaluation.score;
      evaluated = true;
      reached_target = task.stops_at_target() && evaluation.score >= settings.target_accuracy;
      evaluation.record["step"] = state.step;
      evaluation.record["eval"] = true;
      if (metrics) metrics->write(evaluation.record);
      progress.message("step " + std::to_string(state.step) + ": " + evaluation.summary);
    }
    if (received_signal != 0) {
      save();
      progress.finish();
      result.interrupted = true;
      break;
    }
    if (state.step % checkpoint_every == 0 || reached_target) save();
  }
  result.checkpoint_dir = checkpoint_dir.string();
  result.steps = state.step;
  result.total_steps = total_steps;
  if (result.interrupted) return result;
  progress.finish();
  result.stopped_early = state.step < total_steps && !reached_target;
  save();

  result.final_evaluation = task.evaluate();
  if (communicator != nullptr) {
    result.final_evaluation.score =
        communicator->from_root({result.final_evaluation.score}, "sharing rank 0's final evaluation")[0];
  }
  result.best_score = evaluated ? std::max(state.best_score, result.final_evaluation.score) : result.final_evaluation.score;
  result.reached_target = task.stops_at_target() && result.final_evaluation.score >= settings.target_accuracy;
  return result;
}

}  // namespace lintime::train
