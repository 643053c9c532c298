// Data-parallel training on PyTorch's own distributed engine (c10d): the launch environment
// torchrun sets, one process group per run (Gloo on CPUs; on GPUs NCCL for the gradients and
// Gloo beside it for the host-side control values), and the collectives the trainer needs, each
// failing with one line that names the operation, this rank and the ranks that fell behind.
// build-notes.md ("Multi-GPU from C++") has what was checked of c10d from C++.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace c10d {
class Backend;
class Store;
}  // namespace c10d

namespace lintime::train {

// What torchrun (or a hand-made launch) tells a process: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT; TORCHELASTIC_USE_AGENT_STORE=True when torchrun's agent already
// serves the store (every rank then connects as a client under "/worker/attempt_<restart>").
struct LaunchEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;
  int restart_count = 0;  // TORCHELASTIC_RESTART_COUNT
};

// nullopt when neither RANK nor WORLD_SIZE is set (one process, trained as before). Throws
// lintime::Error naming the variable when the set is partial or a value is not a valid number.
std::optional<LaunchEnvironment> launch_environment();

class Communicator {
 public:
  // Joins the run's process group; waits at most `timeout` for the others to arrive and for
  // any later collective. `device`: the training device (a GPU: NCCL for device tensors).
  static std::unique_ptr<Communicator> join(const LaunchEnvironment& environment, const c10::Device& device,
                                            std::chrono::milliseconds timeout);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_root() const { return rank_ == 0; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Device tensors (the gradient group). The sum is started and returned; `wait` ends it.
  c10::intrusive_ptr<c10d::Work> start_sum(at::Tensor& tensor);
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);
  // Sharded (ZeRO): rank r receives the sum of the r-th of `input`'s world_size equal parts.
  c10::intrusive_ptr<c10d::Work> start_reduce_scatter(at::Tensor& output, at::Tensor& input);
  // `whole` becomes every rank's `part`, in rank order.
  void gather_parts(at::Tensor& whole, const at::Tensor& part, const std::string& what);
  // Every rank's tensors take rank 0's values.
  void broadcast(std::vector<at::Tensor>& tensors, const std::string& what);

  // Host values (the control group): the sum over ranks, rank 0's values, the maximum.
  std::vector<double> sum(const std::vector<double>& values, const std::string& what);
  std::vector<double> from_root(const std::vector<double>& values, const std::string& what);
  double max(double value, const std::string& what);
  // The maximum started now and read later (its latency hidden behind the work between).
  struct Pending {
    at::Tensor value;
    c10::intrusive_ptr<c10d::Work> work;
  };
  Pending start_max(double value);
  double finish(Pending& pending, const std::string& what);
  // One value from every rank, in rank order.
  std::vector<double> gather(double value, const std::string& what);
  void barrier(const std::string& what);

  // Records in the store the step this rank is working on, so that a failed collective can
  // name the ranks that did not reach it.
  void heartbeat(int64_t step);

 private:
  Communicator() = default;
  [[noreturn]] void fail_collective(const std::string& what, const std::exception& error);
  // Runs one collective (or store operation); an exception becomes fail_collective's line.
  template <typename Collective>
  auto guarded(const std::string& what, Collective&& collective);
  std::string late_ranks();

  int rank_ = 0, world_size_ = 1;
  std::chrono::milliseconds timeout_{0};
  int64_t step_ = -1;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> control_;    // Gloo, host tensors
  c10::intrusive_ptr<c10d::Backend> gradients_;  // NCCL on a GPU, else the control group
  c10::Device device_{c10::kCPU};
};

// The devices this rank trains on: cuda:LOCAL_RANK when the requested device is a GPU.
c10::Device rank_device(const c10::Device& requested, const LaunchEnvironment& environment);

}  // namespace lintime::train
