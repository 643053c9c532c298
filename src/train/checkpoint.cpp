// Atomic checkpoint save and validated load. File-system work uses POSIX calls: libtorch.so
// exports its own copies of the std::filesystem free functions, which the dynamic linker may
// bind in place of libstdc++'s (remove_all crashes when that happens).
#include "train/checkpoint.h"

#include "core/tensor_checks.h"
#include "core/error.h"
#include "io/model_weights.h"
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <ftw.h>
#include <map>
#include <set>
#include <sys/stat.h>
#include <unistd.h>

namespace lintime::train {

namespace {

constexpr const char* kFormat = "lintime-checkpoint-1";
constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kConfigFile = "config.json";
constexpr const char* kTrainConfigFile = "train_config.json";

bool path_exists(const std::string& path) {
  struct stat file_stat {};
  return ::lstat(path.c_str(), &file_stat) == 0;
}

void remove_tree(const std::string& path) {
  if (!path_exists(path)) return;
  ::nftw(path.c_str(), [](const char* entry, const struct stat*, int, FTW*) { return ::remove(entry); },
         16, FTW_DEPTH | FTW_PHYS);
  LINTIME_CHECK(!path_exists(path), "checkpoint: cannot remove '", path, "'");
}

void make_directories(const std::string& path) {
  if (path.empty()) return;
  for (size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST)
      fail("checkpoint: cannot create directory '", prefix, "': ", std::strerror(errno));
    if (slash == std::string::npos) break;
  }
}

void sync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_text_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LINTIME_CHECK(fd >= 0, "checkpoint: cannot create '", path, "': ", std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t written = ::write(fd, text.data() + done, text.size() - done);
    if (written < 0 && errno == EINTR) continue;
    if (written < 0) {
      int saved = errno;
      ::close(fd);
      fail("checkpoint: cannot write '", path, "': ", std::strerror(saved));
    }
    done += static_cast<size_t>(written);
  }
  const bool synced = ::fsync(fd) == 0;
  const bool closed = ::close(fd) == 0;
  LINTIME_CHECK(synced && closed, "checkpoint: cannot write '", path, "': ", std::strerror(errno));
}

nlohmann::json read_json_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LINTIME_CHECK(fd >= 0, "checkpoint: cannot open '", path, "': ", std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  for (;;) {
    ssize_t count = ::read(fd, buffer, sizeof(buffer));
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) break;
    text.append(buffer, static_cast<size_t>(count));
  }
  ::close(fd);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    fail("checkpoint: '", path, "' is not valid JSON (", error.what(), ")");
  }
}

std::string without_trailing_slash(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  LINTIME_CHECK(!path.empty(), "checkpoint: empty directory name");
  return path;
}

std::string parent_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool is_complete(const std::string& dir) {
  return path_exists(dir + "/" + kModelFile) && path_exists(dir + "/" + kStateFile);
}

// The directory to read: `dir`, or "<dir>.old" when a save crashed between its two renames.
std::string readable_checkpoint(const std::string& dir) {
  if (is_complete(dir)) return dir;
  if (!path_exists(dir) && is_complete(dir + ".old")) return dir + ".old";
  fail("checkpoint '", dir, "': not found or incomplete (expected ", kModelFile, " and ", kStateFile,
       ")");
}

template <typename T>
T field(const nlohmann::json& object, const char* key, const std::string& path, T fallback) {
  if (!object.contains(key)) return fallback;
  try {
    return object.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("checkpoint: '", path, "': field '", key, "' has the wrong type (", object.at(key).dump(), ")");
  }
}

TrainerState read_state_files(const std::string& dir, int64_t* optimizer_steps, bool* has_optimizer) {
  const std::string state_path = dir + "/" + kStateFile;
  nlohmann::json json = read_json_file(state_path);
  LINTIME_CHECK(json.is_object(), "checkpoint: '", state_path, "' must hold a JSON object");
  const std::string format = field<std::string>(json, "format", state_path, "");
  LINTIME_CHECK(format == kFormat, "checkpoint: '", state_path, "' has format '", format,
                "', expected '", kFormat, "'");
  TrainerState state;
  state.step = field<int64_t>(json, "step", state_path, 0);
  state.epoch = field<int64_t>(json, "epoch", state_path, 0);
  state.data_position = field<int64_t>(json, "data_position", state_path, 0);
  // "best_accuracy": the name before the trainer served other tasks than MQAR.
  state.best_score = field<double>(json, json.contains("best_score") ? "best_score" : "best_accuracy", state_path, 0.0);
  if (json.contains("rng")) state.rng = json["rng"];
  if (json.contains("progress")) state.progress = json["progress"];
  if (optimizer_steps) *optimizer_steps = field<int64_t>(json, "optimizer_step_count", state_path, 0);
  if (has_optimizer) *has_optimizer = field<bool>(json, "has_optimizer", state_path, false);
  const std::string train_config_path = dir + "/" + kTrainConfigFile;
  const std::string config_path = path_exists(train_config_path) ? train_config_path : dir + "/" + kConfigFile;
  if (path_exists(config_path)) state.config = read_json_file(config_path);
  return state;
}

std::string read_binary_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LINTIME_CHECK(fd >= 0, "checkpoint: cannot open '", path, "' to copy it in: ", std::strerror(errno));
  std::string bytes;
  char buffer[1 << 16];
  for (;;) {
    ssize_t count = ::read(fd, buffer, sizeof(buffer));
    if (count < 0 && errno == EINTR) continue;
    if (count < 0) {
      const int saved = errno;
      ::close(fd);
      fail("checkpoint: cannot read '", path, "': ", std::strerror(saved));
    }
    if (count == 0) break;
    bytes.append(buffer, static_cast<size_t>(count));
  }
  ::close(fd);
  return bytes;
}

}  // namespace

void save_checkpoint(const std::string& dir, const layers::Module& model, const AdamW* optimizer,
                     const TrainerState& state) {
  CheckpointContents contents;
  contents.weights = model.named_parameters();
  contents.optimizer = optimizer;
  save_checkpoint(dir, contents, state);
}

void save_checkpoint(const std::string& dir_argument, const CheckpointContents& contents, const TrainerState& state) {
  const AdamW* optimizer = contents.optimizer;
  const std::string dir = without_trailing_slash(dir_argument);
  const std::string temporary = dir + ".tmp";
  const std::string old = dir + ".old";
  make_directories(parent_of(dir));
  // A previous save that crashed between its renames left only "<dir>.old": restore it first
  // so that the swap below never loses the last complete checkpoint.
  if (!path_exists(dir) && is_complete(old)) {
    LINTIME_CHECK(::rename(old.c_str(), dir.c_str()) == 0, "checkpoint: cannot restore '", old,
                  "': ", std::strerror(errno));
  }
  remove_tree(temporary);
  LINTIME_CHECK(::mkdir(temporary.c_str(), 0755) == 0, "checkpoint: cannot create '", temporary,
                "': ", std::strerror(errno));
  try {
    nlohmann::json json = {
        {"format", kFormat},
        {"step", state.step},
        {"epoch", state.epoch},
        {"data_position", state.data_position},
        {"best_score", state.best_score},
        {"rng", state.rng},
        {"progress", state.progress},
        {"has_optimizer", optimizer != nullptr || contents.optimizer_step_count >= 0},
        {"optimizer_step_count", optimizer ? optimizer->step_count() : std::max<int64_t>(contents.optimizer_step_count, 0)},
    };
    io::save_safetensors(temporary + "/" + kModelFile, contents.weights, {{"format", "pt"}});
    if (optimizer) {
      io::save_safetensors(temporary + "/" + kOptimizerFile, optimizer->state_tensors(),
                           {{"step_count", std::to_string(optimizer->step_count())}});
    } else if (contents.optimizer_step_count >= 0) {
      io::save_safetensors(temporary + "/" + kOptimizerFile, contents.optimizer_tensors,
                           {{"step_count", std::to_string(contents.optimizer_step_count)}});
    }
    if (contents.model_config.is_null()) {
      write_text_file(temporary + "/" + kConfigFile, state.config.dump(2) + "\n");
    } else {
      write_text_file(temporary + "/" + kConfigFile, contents.model_config.dump(2) + "\n");
      write_text_file(temporary + "/" + kTrainConfigFile, state.config.dump(2) + "\n");
    }
    for (const auto& [source, name] : contents.files) {
      LINTIME_CHECK(name.find('/') == std::string::npos && name != kModelFile && name != kStateFile &&
                        name != kConfigFile && name != kTrainConfigFile && name != kOptimizerFile,
                    "checkpoint: cannot copy '", source, "' in as '", name, "' (a plain name of no checkpoint file expected)");
      write_text_file(temporary + "/" + name, read_binary_file(source));
    }
    for (const auto& [name, text] : contents.texts) {
      LINTIME_CHECK(name.find('/') == std::string::npos && name != kModelFile && name != kStateFile &&
                        name != kConfigFile && name != kTrainConfigFile && name != kOptimizerFile,
                    "checkpoint: cannot write '", name, "' (a plain name of no checkpoint file expected)");
      write_text_file(temporary + "/" + name, text);
    }
    write_text_file(temporary + "/" + kStateFile, json.dump(2) + "\n");
    sync_path(temporary);
  } catch (...) {
    remove_tree(temporary);
    throw;
  }
  remove_tree(old);
  const bool had_previous = path_exists(dir);
  if (had_previous && ::rename(dir.c_str(), old.c_str()) != 0) {
    int saved = errno;
    remove_tree(temporary);
    fail("checkpoint: cannot move '", dir, "' aside: ", std::strerror(saved));
  }
  if (::rename(temporary.c_str(), dir.c_str()) != 0) {
    int saved = errno;
    if (had_previous) ::rename(old.c_str(), dir.c_str());
    remove_tree(temporary);
    fail("checkpoint: cannot move '", temporary, "' into place: ", std::strerror(saved));
  }
  sync_path(parent_of(dir));
  remove_tree(old);
}

void load_optimizer_state(const std::string& dir_argument, AdamW& optimizer) {
  const std::string dir = readable_checkpoint(without_trailing_slash(dir_argument));
  int64_t optimizer_steps = 0;
  bool has_optimizer = false;
  read_state_files(dir, &optimizer_steps, &has_optimizer);
  LINTIME_CHECK(has_optimizer, "checkpoint '", dir, "' holds no optimizer state (saved without one)");
  const auto state = io::load_safetensors(dir + "/" + kOptimizerFile);
  try {
    optimizer.load_state(state, optimizer_steps);
  } catch (const Error& error) {
    fail("checkpoint '", dir, "/", kOptimizerFile, "': ", error.what());
  }
}

std::map<std::string, at::Tensor> read_optimizer_tensors(const std::string& dir_argument, int64_t* step_count) {
  const std::string dir = readable_checkpoint(without_trailing_slash(dir_argument));
  bool has_optimizer = false;
  read_state_files(dir, step_count, &has_optimizer);
  LINTIME_CHECK(has_optimizer, "checkpoint '", dir, "' holds no optimizer state (saved without one)");
  return io::load_safetensors(dir + "/" + kOptimizerFile);
}

TrainerState read_trainer_state(const std::string& dir_argument) {
  return read_state_files(readable_checkpoint(without_trailing_slash(dir_argument)), nullptr, nullptr);
}

bool checkpoint_exists(const std::string& dir_argument) {
  const std::string dir = without_trailing_slash(dir_argument);
  return is_complete(dir) || (!path_exists(dir) && is_complete(dir + ".old"));
}

TrainerState load_checkpoint(const std::string& dir_argument, layers::Module& model, AdamW* optimizer) {
  const std::string dir = readable_checkpoint(without_trailing_slash(dir_argument));
  int64_t optimizer_steps = 0;
  bool has_optimizer = false;
  TrainerState state = read_state_files(dir, &optimizer_steps, &has_optimizer);

  // The optimizer state is checked first; load_module_weights then checks every weight before
  // changing any, so a failed load changes nothing.
  std::map<std::string, at::Tensor> optimizer_state;
  if (optimizer) {
    LINTIME_CHECK(has_optimizer, "checkpoint '", dir, "' holds no optimizer state (saved without one)");
    optimizer_state = io::load_safetensors(dir + "/" + kOptimizerFile);
    try {
      optimizer->validate_state(optimizer_state);
    } catch (const Error& error) {
      fail("checkpoint '", dir, "/", kOptimizerFile, "': ", error.what());
    }
  }
  const io::ModelWeights weights(dir + "/" + kModelFile);
  io::load_module_weights(model, weights, [](const std::string& name, const at::Tensor&) { return io::WeightSource{name}; });
  if (optimizer) optimizer->load_state(optimizer_state, optimizer_steps);
  return state;
}

}  // namespace lintime::train
