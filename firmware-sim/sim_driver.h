// The simulated supernode: a dev::Driver implemented in host memory with a timing model.
//
// create_driver() takes a validated, finalized Topology (from presets.h or description.h)
// and returns a driver whose HBM is host memory reserved lazily, whose engines keep virtual
// clocks, and whose faults are deterministic from `seed`.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/base/status.h"
#include "runtime/device/driver.h"
#include "runtime/device/topology.h"

namespace moe::sim {

struct SimConfig {
  uint64_t seed = 1;            // drives every injected packet fault
  uint32_t queue_depth = 4096;  // default ring size of a queue
};

StatusOr<std::unique_ptr<dev::Driver>> create_driver(dev::Topology topology,
                                                     const SimConfig& config = {});

}  // namespace moe::sim
