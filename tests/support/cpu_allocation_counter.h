// Counts the bytes ATen allocates on the CPU, for tests of how much memory an op keeps: while a
// CpuAllocationCounter lives, ATen's CPU allocator is wrapped by one that adds each allocation's
// size and subtracts it when the block is freed (also after the counter is gone). Bytes that
// were allocated before the counter started are not seen, nor are their frees. One at a time.
#pragma once

#include <cstdint>

namespace c10 {
struct Allocator;
}

namespace lintime::testing {

class CpuAllocationCounter {
 public:
  CpuAllocationCounter();   // installs the counting allocator; live and peak start at zero
  ~CpuAllocationCounter();  // puts the previous allocator back
  CpuAllocationCounter(const CpuAllocationCounter&) = delete;
  CpuAllocationCounter& operator=(const CpuAllocationCounter&) = delete;

  // Bytes allocated since the counter started (or since reset) that are still alive.
  int64_t live_bytes() const;
  // The most that live_bytes reached since the counter started (or since reset).
  int64_t peak_bytes() const;
  // Starts both figures again from zero (blocks alive now, when freed, lower live_bytes below 0).
  void reset();

 private:
  c10::Allocator* previous_;
};

}  // namespace lintime::testing
