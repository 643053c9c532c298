// Implementation of CpuAllocationCounter: a c10::Allocator that takes plain blocks from the
// allocator it replaces and keeps their sizes by address.
#include "support/cpu_allocation_counter.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <limits>
#include <mutex>
#include <unordered_map>

namespace lintime::testing {
namespace {

// The counters outlive any one CpuAllocationCounter: blocks it counted can be freed later.
std::atomic<int64_t> live{0};
std::atomic<int64_t> peak{0};
std::atomic<bool> installed{false};

// Installed with the highest priority, so that it replaces ATen's default, and so that putting
// the previous one back (same priority) is accepted.
constexpr uint8_t kPriority = std::numeric_limits<uint8_t>::max();

// The size of each counted block, by address: ATen's raw_allocate (oneDNN's scratch buffers
// use it) needs blocks whose context is the data pointer itself, so the size cannot ride in a
// context of its own.
std::mutex sizes_mutex;
std::unordered_map<void*, int64_t>& sizes() {
  static auto* by_address = new std::unordered_map<void*, int64_t>();
  return *by_address;
}
c10::DeleterFnPtr inner_free = nullptr;

void free_counted(void* data) {
  int64_t bytes = 0;
  {
    const std::lock_guard<std::mutex> lock(sizes_mutex);
    const auto it = sizes().find(data);
    if (it != sizes().end()) {
      bytes = it->second;
      sizes().erase(it);
    }
  }
  live.fetch_sub(bytes);
  inner_free(data);
}

class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner) : inner_(inner) {
    TORCH_CHECK(inner->raw_deleter() != nullptr, "CpuAllocationCounter: the CPU allocator hands out no plain blocks");
    inner_free = inner->raw_deleter();
  }

  c10::DataPtr allocate(size_t size) override {
    void* data = inner_->raw_allocate(size);
    if (data == nullptr) return {nullptr, c10::Device(c10::DeviceType::CPU)};
    const auto bytes = static_cast<int64_t>(size);
    {
      const std::lock_guard<std::mutex> lock(sizes_mutex);
      sizes()[data] = bytes;
    }
    const int64_t now = live.fetch_add(bytes) + bytes;
    int64_t seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
    return {data, data, &free_counted, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &free_counted; }

  void copy_data(void* destination, const void* source, size_t count) const override {
    default_copy_data(destination, source, count);
  }

 private:
  c10::Allocator* inner_;
};

}  // namespace

CpuAllocationCounter::CpuAllocationCounter() : previous_(c10::GetCPUAllocator()) {
  TORCH_CHECK(!installed.exchange(true), "CpuAllocationCounter: one at a time");
  // Kept for the life of the process: blocks it handed out may be freed after the counter ends.
  static CountingAllocator* counting = nullptr;
  if (counting == nullptr) counting = new CountingAllocator(previous_);
  reset();
  c10::SetCPUAllocator(counting, kPriority);
}

CpuAllocationCounter::~CpuAllocationCounter() {
  c10::SetCPUAllocator(previous_, kPriority);
  installed.store(false);
}

int64_t CpuAllocationCounter::live_bytes() const { return live.load(); }
int64_t CpuAllocationCounter::peak_bytes() const { return peak.load(); }

void CpuAllocationCounter::reset() {
  live.store(0);
  peak.store(0);
}

}  // namespace lintime::testing
