#include "train/distributed.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(LINTIME_WITH_CUDA) && defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define LINTIME_WITH_NCCL 1
#endif

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace lintime::train {

namespace {

const char* environment_value(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? value : nullptr;
}

int environment_integer(const char* name, int lowest, int highest, std::optional<int> fallback) {
  const char* text = environment_value(name);
  if (text == nullptr) {
    LINTIME_CHECK(fallback.has_value(), "distributed: ", name, " is not set (torchrun sets RANK, WORLD_SIZE, ",
                  "LOCAL_RANK, MASTER_ADDR and MASTER_PORT; set all of them or none)");
    return *fallback;
  }
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  LINTIME_CHECK(errno == 0 && end != text && *end == '\0' && value >= lowest && value <= highest, "distributed: ", name,
                " must be an integer in [", lowest, ", ", highest, "], got '", text, "'");
  return static_cast<int>(value);
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

// The first line of an exception's message, shortened: Gloo's and NCCL's run over many lines.
std::string first_line(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  if (line.size() > 240) line = line.substr(0, 240) + "...";
  return line;
}

std::string step_key(int rank) { return "lintime/step/" + std::to_string(rank); }

}  // namespace

std::optional<LaunchEnvironment> launch_environment() {
  if (environment_value("RANK") == nullptr && environment_value("WORLD_SIZE") == nullptr) return std::nullopt;
  LaunchEnvironment environment;
  environment.world_size = environment_integer("WORLD_SIZE", 1, 1 << 20, std::nullopt);
  environment.rank = environment_integer("RANK", 0, environment.world_size - 1, std::nullopt);
  environment.local_rank = environment_integer("LOCAL_RANK", 0, environment.world_size - 1, environment.rank);
  const char* address = environment_value("MASTER_ADDR");
  LINTIME_CHECK(address != nullptr || environment.world_size == 1,
                "distributed: MASTER_ADDR is not set (the address of rank 0's store; torchrun sets it)");
  if (address != nullptr) environment.master_addr = address;
  environment.master_port = environment_integer("MASTER_PORT", 1, 65535, environment.world_size == 1 ? std::optional<int>(29500)
                                                                                                      : std::nullopt);
  const char* agent = environment_value("TORCHELASTIC_USE_AGENT_STORE");
  environment.agent_store = agent != nullptr && (std::strcmp(agent, "True") == 0 || std::strcmp(agent, "true") == 0 ||
                                                 std::strcmp(agent, "1") == 0);
  environment.restart_count = environment_integer("TORCHELASTIC_RESTART_COUNT", 0, std::numeric_limits<int>::max(), 0);
  return environment;
}

c10::Device rank_device(const c10::Device& requested, const LaunchEnvironment& environment) {
  if (!requested.is_cuda()) return requested;
  const auto* guard = c10::impl::getDeviceGuardImpl(c10::kCUDA);
  const int count = static_cast<int>(guard->deviceCount());
  LINTIME_CHECK(environment.local_rank < count, "distributed: LOCAL_RANK ", environment.local_rank, " needs GPU ",
                environment.local_rank, " but this machine has ", count, " (start at most ", count, " processes per node)");
  const c10::Device device(c10::kCUDA, static_cast<c10::DeviceIndex>(environment.local_rank));
  guard->setDevice(device);  // NCCL's communicator and every later allocation go to this GPU
  return device;
}

std::unique_ptr<Communicator> Communicator::join(const LaunchEnvironment& environment, const c10::Device& device,
                                                 std::chrono::milliseconds timeout) {
  std::unique_ptr<Communicator> communicator(new Communicator());
  communicator->rank_ = environment.rank;
  communicator->world_size_ = environment.world_size;
  communicator->timeout_ = timeout;
  communicator->device_ = device;

  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(environment.master_port);
  store_options.timeout = timeout;
  store_options.useLibUV = true;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    if (environment.agent_store) {
      store_options.isServer = false;  // torchrun's agent serves it
      store = c10::make_intrusive<c10d::PrefixStore>(
          "/worker/attempt_" + std::to_string(environment.restart_count),
          c10::make_intrusive<c10d::TCPStore>(environment.master_addr, store_options));
    } else {
      store_options.isServer = environment.rank == 0;
      store_options.numWorkers = static_cast<size_t>(environment.world_size);
      store = c10::make_intrusive<c10d::TCPStore>(environment.master_addr, store_options);
    }
  } catch (const std::exception& error) {
    fail("distributed: rank ", environment.rank, " could not reach the store at ", environment.master_addr, ":",
         environment.master_port, " within ", timeout.count() / 1000.0, " s: ", first_line(error.what()));
  }
  communicator->store_ = c10::make_intrusive<c10d::PrefixStore>("lintime", store);

  try {
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
    if (const char* interface = environment_value("GLOO_SOCKET_IFNAME")) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else if (is_loopback(environment.master_addr)) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    gloo_options->threads = 2;
    communicator->control_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", communicator->store_), environment.rank,
        environment.world_size, gloo_options);
    communicator->gradients_ = communicator->control_;
#ifdef LINTIME_WITH_NCCL
    if (device.is_cuda()) {
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      communicator->gradients_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", communicator->store_), environment.rank,
          environment.world_size, nccl_options);
    }
#else
    LINTIME_CHECK(!device.is_cuda(), "distributed: this build has no NCCL; train on GPUs with a CUDA build of lintime");
#endif
  } catch (const lintime::Error&) {
    throw;
  } catch (const std::exception& error) {
    fail("distributed: rank ", environment.rank, " of ", environment.world_size, " could not join the process group: ",
         first_line(error.what()));
  }
  communicator->heartbeat(0);
  return communicator;
}

Communicator::~Communicator() {
  // NCCL's group wants an explicit shutdown (its destructor otherwise warns that
  // destroy_process_group() was not called); every collective has been waited for by now.
  if (gradients_ && gradients_ != control_) {
    try {
      gradients_->shutdown();
    } catch (const std::exception&) {
      // Exiting anyway: nothing is left to save.
    }
  }
}

template <typename Collective>
auto Communicator::guarded(const std::string& what, Collective&& collective) {
  try {
    return collective();
  } catch (const std::exception& error) {
    fail_collective(what, error);
  }
}

void Communicator::heartbeat(int64_t step) {
  step_ = step;
  guarded("recording step " + std::to_string(step) + " in the store",
          [&] { return store_->set(step_key(rank_), std::to_string(step)); });
}

std::string Communicator::late_ranks() {
  std::string behind, others;
  try {
    store_->setTimeout(std::chrono::milliseconds(2000));
    for (int other = 0; other < world_size_; ++other) {
      if (other == rank_) continue;
      const auto raw = store_->get(step_key(other));
      const int64_t step = std::stoll(std::string(raw.begin(), raw.end()));
      auto& list = step < step_ ? behind : others;
      list += (list.empty() ? "" : ", ") + ("rank " + std::to_string(other) + " at step " + std::to_string(step));
    }
  } catch (const std::exception&) {
    return "; the run's store cannot be reached (rank 0 or torchrun's agent is gone)";
  }
  if (!behind.empty()) return "; behind: " + behind + " (this rank at step " + std::to_string(step_) + ")";
  return "; every other rank reached step " + std::to_string(step_) + " (" + others +
         "): one of them failed or stopped inside it";
}

void Communicator::fail_collective(const std::string& what, const std::exception& error) {
  const std::string late = late_ranks();
  // The groups hold work that will never finish: let them go without waiting for it, so that
  // this process can exit now.
  (void)control_.release();
  (void)gradients_.release();
  (void)store_.release();
  fail("distributed: ", what, " failed on rank ", rank_, " of ", world_size_, " (timeout ", timeout_.count() / 1000.0,
       " s): ", first_line(error.what()), late);
}

c10::intrusive_ptr<c10d::Work> Communicator::start_sum(at::Tensor& tensor) {
  std::vector<at::Tensor> tensors = {tensor};
  return guarded("starting a gradient sum", [&] { return gradients_->allreduce(tensors); });
}

c10::intrusive_ptr<c10d::Work> Communicator::start_reduce_scatter(at::Tensor& output, at::Tensor& input) {
  return guarded("starting a gradient reduce-scatter", [&] { return gradients_->_reduce_scatter_base(output, input); });
}

void Communicator::gather_parts(at::Tensor& whole, const at::Tensor& part, const std::string& what) {
  at::Tensor input = part;
  guarded(what, [&] { return gradients_->_allgather_base(whole, input)->wait(timeout_); });
}

void Communicator::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  guarded(what, [&] { return work->wait(timeout_); });
}

void Communicator::broadcast(std::vector<at::Tensor>& tensors, const std::string& what) {
  for (at::Tensor& tensor : tensors) {
    std::vector<at::Tensor> one = {tensor};
    guarded(what, [&] { return gradients_->broadcast(one)->wait(timeout_); });
  }
}

namespace {
std::vector<double> values_of(const at::Tensor& tensor) {
  return std::vector<double>(tensor.data_ptr<double>(), tensor.data_ptr<double>() + tensor.numel());
}
}  // namespace

std::vector<double> Communicator::sum(const std::vector<double>& values, const std::string& what) {
  std::vector<at::Tensor> tensors = {at::tensor(values, at::kDouble)};
  guarded(what, [&] { return control_->allreduce(tensors)->wait(timeout_); });
  return values_of(tensors.front());
}

std::vector<double> Communicator::from_root(const std::vector<double>& values, const std::string& what) {
  std::vector<at::Tensor> tensors = {at::tensor(values, at::kDouble)};
  guarded(what, [&] { return control_->broadcast(tensors)->wait(timeout_); });
  return values_of(tensors.front());
}

double Communicator::max(double value, const std::string& what) {
  std::vector<at::Tensor> tensors = {at::tensor({value}, at::kDouble)};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::MAX;
  guarded(what, [&] { return control_->allreduce(tensors, options)->wait(timeout_); });
  return tensors.front().item<double>();
}

Communicator::Pending Communicator::start_max(double value) {
  Pending pending{at::tensor({value}, at::kDouble), {}};
  std::vector<at::Tensor> tensors = {pending.value};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::MAX;
  pending.work = guarded("starting a maximum over the ranks", [&] { return control_->allreduce(tensors, options); });
  return pending;
}

double Communicator::finish(Pending& pending, const std::string& what) {
  guarded(what, [&] { return pending.work->wait(timeout_); });
  pending.work.reset();
  return pending.value.item<double>();
}

std::vector<double> Communicator::gather(double value, const std::string& what) {
  std::vector<at::Tensor> inputs = {at::tensor({value}, at::kDouble)};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < world_size_; ++r) outputs[0].push_back(at::empty({1}, at::kDouble));
  guarded(what, [&] { return control_->allgather(outputs, inputs)->wait(timeout_); });
  return values_of(at::cat(outputs[0]));
}

void Communicator::barrier(const std::string& what) {
  guarded(what, [&] { return control_->barrier()->wait(timeout_); });
}

}  // namespace lintime::train
