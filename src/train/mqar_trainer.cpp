// MQAR training: the MQAR task of the trainer (trainer.h) and its result. Determinism: the batch
// of step s is a pure function of (data seed, s) and the model of (train.seed), so a run
// resumed from a checkpoint ends with the same weights as an uninterrupted one on the CPU.
#include "train/mqar_trainer.h"

#include "core/config_reader.h"
#include "core/device.h"
#include "core/error.h"
#include "data/mqar_metric.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/trainer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
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
      // The head at the labelled positions only, as in training; the sums stay on the device.
      data::MqarLabelled labelled = data::mqar_labelled(examples.labels);  // on the host: nonzero() would sync
      labelled.positions = labelled.positions.to(device);
      labelled.labels = labelled.labels.to(device);
      const at::Tensor logits = model.logits_at(examples.inputs.to(device), labelled.positions);
      accuracy.add(segment, data::mqar_labelled_example_accuracy(logits, labelled, examples.labels.size(0),
                                                                 examples.labels.size(1)));
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

// MQAR as a task of the trainer: the batch of step s comes from the training segments by
// (data seed, s), the loss is cross-entropy at the query positions, the score test accuracy.
class MqarTask final : public TrainingTask {
 public:
  MqarTask(const MqarTrainConfig& config, const c10::Device& device, Communicator* communicator)
      : config_(config),
        device_(device),
        rank_(communicator ? communicator->rank() : 0),
        world_size_(communicator ? communicator->world_size() : 1),
        train_data_(make_train_dataset(config)),
        test_data_(make_test_dataset(config)),
        model_(config.model, config.optim.seed) {
    model_.to(device_);
    model_.set_requires_grad(true);
  }

  layers::Module& model() override { return model_; }
  nlohmann::json config_document() const override { return config_.to_document(); }
  nlohmann::json rng_description() const override {
    return {{"model_seed", config_.optim.seed}, {"train_data_seed", train_data_.seed()},
            {"test_data_seed", test_data_.seed()}};
  }
  int64_t steps_per_epoch() const override { return train_data_.batches_per_epoch(); }
  int64_t total_steps() const override { return config_.total_steps(train_data_.batches_per_epoch()); }
  const char* score_name() const override { return "acc"; }

  at::Tensor training_loss(int64_t step, int64_t /*micro*/, int64_t* tokens) override {
    auto batch = train_data_.training_batch_at_step(step);
    if (!device_.is_cpu()) model_.check_inputs(batch.inputs);  // on the host: no wait for the device
    at::Tensor host_inputs = batch.inputs, host_labels = batch.labels;
    double share = 1.0;  // this rank's scored positions over the whole batch's
    if (world_size_ > 1) {
      // Rank r of W takes rows [r·B/W, (r+1)·B/W) of the step's B; its mean loss is weighted
      // by its share of the scored positions, so that the ranks' losses add up to the batch's.
      const int64_t rows = host_inputs.size(0);
      const int64_t begin = rows * rank_ / world_size_, end = rows * (rank_ + 1) / world_size_;
      const double scored = host_labels.ne(data::kMqarIgnoreIndex).sum().item<double>();
      host_inputs = host_inputs.slice(0, begin, end);
      host_labels = host_labels.slice(0, begin, end);
      const double mine = host_labels.ne(data::kMqarIgnoreIndex).sum().item<double>();
      *tokens = host_inputs.numel();
      if (mine == 0) return at::zeros({}, at::kDouble);  // no rows here: nothing to backpropagate
      share = mine / scored;
    }
    const data::MqarLabelled labelled = data::mqar_labelled(host_labels);
    const at::Tensor inputs = to_device(host_inputs), positions = to_device(labelled.positions),
                     labels = to_device(labelled.labels);
    // Dropout masks differ per rank (the rank is part of the step's seed).
    if (config_.model.embed_dropout > 0) seed_dropout_for_step(device_, config_.optim.seed, step * world_size_ + rank_);
    *tokens = inputs.numel();
    at::Tensor loss = data::mqar_labelled_loss(model_.logits_at(inputs, positions, /*training=*/true), labels);
    return world_size_ > 1 ? loss * share : loss;
  }

  // One set of device buffers per batch shape (rows, length, labelled positions): a segment's
  // full batches and its epoch's last, shorter one.
  bool stages_batches() const override { return world_size_ == 1 && model_.training_is_replayable(); }

  std::string stage_batch(int64_t step, int64_t* tokens) override {
    auto batch = train_data_.training_batch_at_step(step);
    model_.check_inputs(batch.inputs);
    const data::MqarLabelled labelled = data::mqar_labelled(batch.labels);
    const std::string shape = std::to_string(batch.inputs.size(0)) + "x" + std::to_string(batch.inputs.size(1)) +
                              ":" + std::to_string(labelled.positions.size(0));
    Staged& staged = staged_[shape];
    if (!staged.inputs.defined()) {
      staged.inputs = at::empty_like(batch.inputs, at::TensorOptions().device(device_));
      staged.positions = at::empty_like(labelled.positions, at::TensorOptions().device(device_));
      staged.labels = at::empty_like(labelled.labels, at::TensorOptions().device(device_));
    }
    staged.inputs.copy_(pinned(batch.inputs), /*non_blocking=*/true);
    staged.positions.copy_(pinned(labelled.positions), /*non_blocking=*/true);
    staged.labels.copy_(pinned(labelled.labels), /*non_blocking=*/true);
    if (config_.model.embed_dropout > 0) seed_dropout_for_step(device_, config_.optim.seed, step);
    *tokens = batch.inputs.numel();
    return shape;
  }

  at::Tensor staged_loss(const std::string& shape) override {
    const Staged& staged = staged_.at(shape);
    return data::mqar_labelled_loss(model_.logits_at(staged.inputs, staged.positions, /*training=*/true),
                                    staged.labels);
  }

  TaskEvaluation evaluate() override {
    last_ = evaluate_mqar(model_, test_data_, device_);
    return {evaluation_json(last_), last_.accuracy, "test accuracy " + std::to_string(last_.accuracy)};
  }

  const MqarEvaluation& last_evaluation() const { return last_; }
  const models::MqarModel& mqar_model() const { return model_; }

 private:
  struct Staged {
    at::Tensor inputs, positions, labels;
  };

  // A host batch on the training device. On a GPU the copy leaves from pinned memory without
  // waiting: the host goes on to the step's launches while the device finishes the last step.
  at::Tensor to_device(const at::Tensor& host) const {
    if (device_.is_cpu()) return host;
    return pinned(host).to(device_, /*non_blocking=*/true);
  }
  // Page-locked copy from torch's caching host allocator, which keeps the block until the
  // copies that read it are done.
  static at::Tensor pinned(const at::Tensor& host) { return host.pin_memory(); }

  MqarTrainConfig config_;
  c10::Device device_;
  int64_t rank_ = 0, world_size_ = 1;
  data::MqarDataset train_data_, test_data_;
  models::MqarModel model_;
  MqarEvaluation last_;
  std::map<std::string, Staged> staged_;
};

}  // namespace

MqarTrainResult train_mqar(const MqarTrainConfig& config, const MqarTrainOptions& options) {
  const auto wall_start = std::chrono::steady_clock::now();
  const c10::Device device = resolve_device(options.device);
  MqarTask task(config, device, options.communicator);
  const TrainerResult trained = train(task, config.optim, options);

  MqarTrainResult result;
  result.evaluation = task.last_evaluation();
  result.best_accuracy = trained.best_score;
  result.steps = trained.steps;
  result.total_steps = trained.total_steps;
  result.reached_target = trained.reached_target;
  result.stopped_early = trained.stopped_early;
  result.interrupted = trained.interrupted;
  result.checkpoint_dir = trained.checkpoint_dir;
  result.parameters = task.mqar_model().parameter_count();
  result.state_bytes_per_sequence = task.mqar_model().state_bytes_per_sequence();
  result.lr = config.optim.lr;
  result.device = device.str();
  result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  if (result.interrupted) return result;  // no result.json: the run is not over

  nlohmann::json summary = {{"evaluation", evaluation_json(result.evaluation)},
                            {"best_accuracy", result.best_accuracy}, {"steps", result.steps},
                            {"total_steps", result.total_steps}, {"reached_target", result.reached_target},
                            {"stopped_early", result.stopped_early}, {"wall_seconds", result.wall_seconds},
                            {"parameters", result.parameters},
                            {"state_bytes_per_sequence", result.state_bytes_per_sequence},
                            {"lr", result.lr}, {"device", result.device}};
  if (options.communicator == nullptr || options.communicator->is_root()) {
    config::write_json_file_atomically((fs::path(options.out_dir) / "result.json").string(), summary);
  }
  return result;
}

MqarEvaluation evaluate_mqar_checkpoint(const std::string& dir, const std::string& device_name,
                                        MqarTrainConfig* config_out) {
  fs::path checkpoint_dir(dir);
  if (!checkpoint_exists(checkpoint_dir.string()) && checkpoint_exists((checkpoint_dir / "checkpoint").string()))
    checkpoint_dir /= "checkpoint";
  LINTIME_CHECK(checkpoint_exists(checkpoint_dir.string()), "eval: '", dir,
                "' is not a lintime checkpoint (expected config.json and model.safetensors)");
  const nlohmann::json document = read_trainer_state(checkpoint_dir.string()).config;
  LINTIME_CHECK(document.value("task", "mqar") == "mqar", "eval: '", dir, "' holds a run of task \"", document.value("task", ""),
                "\"; eval scores MQAR runs (for a language model: lintime perplexity on its checkpoint)");
  auto config = MqarTrainConfig::from_document(document);
  const c10::Device device = resolve_device(device_name);
  models::MqarModel model(config.model, config.optim.seed);
  load_checkpoint(checkpoint_dir.string(), model, nullptr);
  model.to(device);
  if (config_out) *config_out = config;
  return evaluate_mqar(model, make_test_dataset(config), device);
}

}  // namespace lintime::train
