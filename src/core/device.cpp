#include "core/device.h"

#include "core/error.h"

#include <ATen/Context.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace lintime {

c10::Device resolve_device(const std::string& name) {
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name == "cuda") {
    LINTIME_CHECK(at::hasCUDA(), "--device cuda: no CUDA device is available (use cpu or auto)");
    return c10::Device(c10::kCUDA, 0);
  }
  if (name.rfind("cuda:", 0) == 0) {  // one GPU of several (a distributed run's LOCAL_RANK)
    const std::string index = name.substr(5);
    LINTIME_CHECK(!index.empty() && index.size() <= 3 && index.find_first_not_of("0123456789") == std::string::npos,
                  "--device cuda:N: N must be a GPU index, got '", name, "'");
    LINTIME_CHECK(at::hasCUDA(), "--device ", name, ": no CUDA device is available (use cpu or auto)");
    const int device = std::stoi(index);
    LINTIME_CHECK(device < static_cast<int>(at::getNumGPUs()), "--device ", name, ": this machine has ", at::getNumGPUs(),
                  " GPUs");
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
  }
  LINTIME_CHECK(name == "auto", "--device must be cpu, cuda, cuda:N or auto, got '", name, "'");
  return at::hasCUDA() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
}

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  fail("--dtype must be float32, bfloat16 or float16, got '", name, "'");
}

double peak_memory_bytes(const c10::Device& device) {
  if (device.is_cuda()) {
    auto* allocator = c10::getDeviceAllocator(c10::kCUDA);
    return static_cast<double>(allocator->getDeviceStats(device.index()).allocated_bytes[0].peak);
  }
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

int64_t available_memory_bytes(const c10::Device& device) {
  if (!device.is_cpu()) return 0;  // the CUDA allocator answers for itself, with a clean error
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

namespace {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB", "EB"};
  int unit = 0;
  while (bytes >= 1000 && unit < 6) {
    bytes /= 1000;
    ++unit;
  }
  char text[64];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
  return text;
}

}  // namespace

void check_fits(const std::string& what, double bytes, const c10::Device& device) {
  const int64_t available = available_memory_bytes(device);
  LINTIME_CHECK(available == 0 || bytes <= static_cast<double>(available), what, ": ", human_bytes(bytes), " asked, ",
                human_bytes(static_cast<double>(available)), " available on ", device.str());
}

}  // namespace lintime
