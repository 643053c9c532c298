// Device time per kernel over a stretch of work, from PyTorch's Kineto profiler (CUPTI on a GPU):
// where a training or decoding step spends its GPU time, by kernel name. For benchmarks
// (`lintime bench train --profile-kernels N`); it slows the work it watches a little.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lintime {

struct KernelTime {
  std::string name;
  int64_t calls = 0;
  double total_ms = 0;
};

class KernelProfile {
 public:
  KernelProfile();  // starts collecting CPU ops and GPU kernels
  ~KernelProfile();  // stops, if stop() was not called
  KernelProfile(const KernelProfile&) = delete;
  KernelProfile& operator=(const KernelProfile&) = delete;
  // Stops and returns the device events (kernels, copies, memsets) summed by name, most time first.
  std::vector<KernelTime> stop();

 private:
  bool running_ = false;
};

}  // namespace lintime
