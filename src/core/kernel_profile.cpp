#include "core/kernel_profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <map>
#include <set>

namespace lintime {
namespace {

namespace impl = torch::profiler::impl;

const impl::ProfilerConfig& kineto_config() {
  static const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
  return config;
}

const std::set<impl::ActivityType>& activities() {
  static const std::set<impl::ActivityType> kinds = {impl::ActivityType::CPU, impl::ActivityType::CUDA};
  return kinds;
}

}  // namespace

KernelProfile::KernelProfile() {
  torch::autograd::profiler::prepareProfiler(kineto_config(), activities());
  torch::autograd::profiler::enableProfiler(kineto_config(), activities());
  running_ = true;
}

KernelProfile::~KernelProfile() {
  if (running_) {
    try {
      torch::autograd::profiler::disableProfiler();
    } catch (...) {
      // Nothing to report from a destructor.
    }
  }
}

std::vector<KernelTime> KernelProfile::stop() {
  running_ = false;
  const auto result = torch::autograd::profiler::disableProfiler();
  std::map<std::string, KernelTime> by_name;
  for (const auto& event : result->events()) {
    if (event.deviceType() == c10::DeviceType::CPU) continue;  // host-side op records
    KernelTime& total = by_name[event.name()];
    total.name = event.name();
    total.calls += 1;
    total.total_ms += static_cast<double>(event.durationNs()) / 1e6;
  }
  std::vector<KernelTime> kernels;
  for (auto& [name, total] : by_name) kernels.push_back(std::move(total));
  std::sort(kernels.begin(), kernels.end(), [](const KernelTime& a, const KernelTime& b) { return a.total_ms > b.total_ms; });
  return kernels;
}

}  // namespace lintime
