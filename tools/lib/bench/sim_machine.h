// A simulated supernode with its memory layer and transport, for benchmarks: the three are
// opened together from a preset and closed in reverse order.
#pragma once

#include <memory>

#include "interconnect/transport.h"
#include "memory/global_memory.h"
#include "runtime/device/driver.h"

namespace moe::bench {

struct SimMachine {
  std::unique_ptr<dev::Driver> driver;
  std::unique_ptr<mem::GlobalMemory> memory;
  std::unique_ptr<ic::Transport> transport;

  // Opens preset `name` (sim::make_preset) with default options; false on any failure.
  bool open(const char* preset);
  ~SimMachine();
};

}  // namespace moe::bench
