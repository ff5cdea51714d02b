// A fabric smoke check on a driver, for the bring-up tool and the collectives benchmark.
//
// timing_all_to_all: timing mode. Every NPU sends `bytes_per_pair` to every other NPU
//   (no payload), as a MoE dispatch would; returns the modelled makespan.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/base/clock.h"
#include "runtime/base/status.h"
#include "runtime/device/driver.h"

namespace moe::tools {

struct AllToAllResult {
  uint32_t npus = 0;
  uint64_t bytes_per_pair = 0;
  uint64_t transfers = 0;
  ModelTime modelled_makespan{};
  double modelled_gbps_per_npu = 0;  // bytes each NPU sent over the makespan
  int64_t wall_ns = 0;
};

Status timing_all_to_all(dev::Driver& driver, uint64_t bytes_per_pair, AllToAllResult* out);

}  // namespace moe::tools
