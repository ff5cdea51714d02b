// Fabric smoke checks on a driver, shared by `moe run` and the bring-up tool.
//
// ring_exchange: functional mode. Every NPU writes a pattern that encodes its id into its
//   HBM and sends it to the next NPU (i -> i+1 mod N) over the fabric; every receiver then
//   checks the bytes. Proves HBM, queues, doorbells, completions and payload movement.
// timing_all_to_all: timing mode. Every NPU sends `bytes_per_pair` to every other NPU
//   (no payload), as a MoE dispatch would; returns the modelled makespan.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/base/clock.h"
#include "runtime/base/status.h"
#include "runtime/device/driver.h"

namespace moe::tools {

struct RingResult {
  uint32_t npus = 0;
  uint64_t bytes_per_npu = 0;
  uint64_t bad_bytes = 0;          // bytes that did not match the sender's pattern
  ModelTime modelled_makespan{};   // first submit to last completion, modelled clock
  int64_t wall_ns = 0;             // the whole check, wall clock
};

struct AllToAllResult {
  uint32_t npus = 0;
  uint64_t bytes_per_pair = 0;
  uint64_t transfers = 0;
  ModelTime modelled_makespan{};
  double modelled_gbps_per_npu = 0;  // bytes each NPU sent over the makespan
  int64_t wall_ns = 0;
};

// Uses `bytes_per_npu` (a multiple of 4 KiB) of HBM on every NPU; frees it before returning.
Status ring_exchange(dev::Driver& driver, uint64_t bytes_per_npu, RingResult* out);
Status timing_all_to_all(dev::Driver& driver, uint64_t bytes_per_pair, AllToAllResult* out);

}  // namespace moe::tools
