// Checkpoints: save/load round trip of weights, optimizer state and trainer state; errors for
// missing, unexpected and wrong-shape tensors that leave the model untouched; atomic replace,
// recovery after a crash between the two renames, and failed saves that keep the old one.
#include "train/checkpoint.h"

#include "core/error.h"
#include "support/test_support.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using lintime::train::AdamW;
using lintime::train::TrainerState;

// POSIX helpers: libtorch.so's exported std::filesystem functions can shadow libstdc++'s.
bool exists(const std::string& path) {
  struct stat file_stat {};
  return ::stat(path.c_str(), &file_stat) == 0;
}

using lintime::testing::TempDir;

class Block : public lintime::layers::Module {
 public:
  explicit Block(int64_t width, at::Generator& generator) {
    weight = at::randn({width, width}, generator).set_requires_grad(true);
    bias = at::randn({width}, generator).set_requires_grad(true);
    register_parameter("weight", weight);
    register_parameter("bias", bias);
  }
  at::Tensor weight, bias;
};

class TinyModel : public lintime::layers::Module {
 public:
  TinyModel(uint64_t seed, int64_t width = 4, bool extra = false) {
    auto generator = lintime::testing::make_generator(seed);
    embeddings = at::randn({10, width}, generator).set_requires_grad(true);
    register_parameter("embeddings.weight", embeddings);
    block = std::make_unique<Block>(width, generator);
    register_module("layers.0", *block);
    if (extra) {
      scale = at::ones({width}).set_requires_grad(true);
      register_parameter("scale", scale);
    }
  }
  at::Tensor embeddings, scale;
  std::unique_ptr<Block> block;
};

std::vector<at::Tensor> snapshot(const lintime::layers::Module& model) {
  std::vector<at::Tensor> values;
  for (const auto& [name, tensor] : model.named_parameters()) values.push_back(tensor.detach().clone());
  return values;
}

void expect_unchanged(const lintime::layers::Module& model, const std::vector<at::Tensor>& before) {
  const auto parameters = model.named_parameters();
  ASSERT_EQ(parameters.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i)
    EXPECT_TRUE(at::equal(parameters[i].second, before[i])) << parameters[i].first << " changed";
}

using lintime::testing::error_of;

void train_steps(TinyModel& model, AdamW& optimizer, int steps, uint64_t seed) {
  auto generator = lintime::testing::make_generator(seed);
  for (int step = 0; step < steps; ++step) {
    for (const auto& [name, parameter] : model.named_parameters()) {
      at::Tensor p = parameter;
      p.mutable_grad() = at::randn(p.sizes(), generator);
    }
    optimizer.step();
  }
}

TrainerState example_state(int64_t step) {
  TrainerState state;
  state.step = step;
  state.epoch = 2;
  state.data_position = 4096;
  state.best_score = 0.875;
  state.rng = {{"seed", 1234}, {"offset", 77}};
  state.config = {{"model", {{"d_model", 4}}}, {"lr", 1e-3}};
  state.progress = {{"last_accuracy", 0.5}, {"reached_target", false}};
  return state;
}

TEST(Checkpoint, RoundTrip) {
  TempDir dir;
  TinyModel model(1);
  AdamW optimizer(model.named_parameters(), {.lr = 0.01});
  train_steps(model, optimizer, 3, 5);
  const std::string path = dir.file("ckpt");
  lintime::train::save_checkpoint(path, model, &optimizer, example_state(3));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt"});
  EXPECT_TRUE(exists(path + "/config.json"));
  EXPECT_TRUE(lintime::train::checkpoint_exists(path));

  TinyModel restored(2);
  AdamW restored_optimizer(restored.named_parameters(), {.lr = 0.01});
  TrainerState state = lintime::train::load_checkpoint(path, restored, &restored_optimizer);
  EXPECT_EQ(state.step, 3);
  EXPECT_EQ(state.epoch, 2);
  EXPECT_EQ(state.data_position, 4096);
  EXPECT_DOUBLE_EQ(state.best_score, 0.875);
  EXPECT_EQ(state.rng, example_state(3).rng);
  EXPECT_EQ(state.config, example_state(3).config);
  EXPECT_EQ(state.progress, example_state(3).progress);
  expect_unchanged(restored, snapshot(model));
  EXPECT_EQ(restored_optimizer.step_count(), 3);

  // Training continues identically from the restored copy.
  train_steps(model, optimizer, 2, 9);
  train_steps(restored, restored_optimizer, 2, 9);
  expect_unchanged(restored, snapshot(model));

  // Loading weights alone works too, and into another dtype.
  TinyModel as_double(3);
  as_double.to(at::kCPU, at::kDouble);
  lintime::train::load_checkpoint(path, as_double);
  EXPECT_EQ(as_double.embeddings.scalar_type(), at::kDouble);
}

TEST(Checkpoint, MismatchesLeaveTheModelUntouched) {
  TempDir dir;
  TinyModel model(1);
  const std::string path = dir.file("ckpt");
  lintime::train::save_checkpoint(path, model, nullptr, example_state(1));

  TinyModel wider(2, /*width=*/5);
  auto before = snapshot(wider);
  std::string message = error_of([&] { lintime::train::load_checkpoint(path, wider); });
  EXPECT_NE(message.find("tensor 'embeddings.weight' has shape [10, 4], the model expects [10, 5]"),
            std::string::npos) << message;
  expect_unchanged(wider, before);

  TinyModel extra(3, 4, /*extra=*/true);
  before = snapshot(extra);
  message = error_of([&] { lintime::train::load_checkpoint(path, extra); });
  EXPECT_NE(message.find("missing tensors 'scale'"), std::string::npos) << message;
  expect_unchanged(extra, before);

  TinyModel with_scale(4, 4, true);
  lintime::train::save_checkpoint(dir.file("with_scale"), with_scale, nullptr, example_state(1));
  TinyModel plain(5);
  before = snapshot(plain);
  message = error_of([&] { lintime::train::load_checkpoint(dir.file("with_scale"), plain); });
  EXPECT_NE(message.find("unexpected tensors 'scale'"), std::string::npos) << message;
  expect_unchanged(plain, before);

  // Asking for optimizer state that was never saved: an error before anything changes.
  AdamW optimizer(plain.named_parameters(), {});
  message = error_of([&] { lintime::train::load_checkpoint(path, plain, &optimizer); });
  EXPECT_NE(message.find("holds no optimizer state"), std::string::npos) << message;
  expect_unchanged(plain, before);

  message = error_of([&] { lintime::train::load_checkpoint(dir.file("nothing"), plain); });
  EXPECT_NE(message.find("not found or incomplete"), std::string::npos) << message;
}

TEST(Checkpoint, AtomicReplaceAndRecovery) {
  TempDir dir;
  const std::string path = dir.file("ckpt");
  TinyModel first(1), second(2);
  lintime::train::save_checkpoint(path, first, nullptr, example_state(10));
  lintime::train::save_checkpoint(path, second, nullptr, example_state(20));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt"});
  EXPECT_EQ(lintime::train::read_trainer_state(path).step, 20);
  TinyModel loaded(3);
  lintime::train::load_checkpoint(path, loaded);
  expect_unchanged(loaded, snapshot(second));

  // A save that fails (a parameter the format cannot hold) keeps the old checkpoint whole.
  TinyModel broken(4);
  broken.embeddings = at::ones({10, 4}, at::kComplexFloat);
  std::string message = error_of([&] {
    lintime::train::save_checkpoint(path, broken, nullptr, example_state(30));
  });
  EXPECT_NE(message.find("embeddings.weight"), std::string::npos) << message;
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt"});
  EXPECT_EQ(lintime::train::read_trainer_state(path).step, 20);

  // Crash between "ckpt" -> "ckpt.old" and "ckpt.tmp" -> "ckpt": the old one is still loadable,
  // and the next save cleans up.
  ASSERT_EQ(::rename(path.c_str(), (path + ".old").c_str()), 0);
  ASSERT_EQ(::mkdir((path + ".tmp").c_str(), 0755), 0);
  EXPECT_TRUE(lintime::train::checkpoint_exists(path));
  EXPECT_EQ(lintime::train::read_trainer_state(path).step, 20);
  lintime::train::save_checkpoint(path, first, nullptr, example_state(40));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt"});
  EXPECT_EQ(lintime::train::read_trainer_state(path).step, 40);
}

}  // namespace
