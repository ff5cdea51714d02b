// Built-in supernode descriptions.
//
// cm384 is the default: 48 nodes x (8 NPUs of 2 dies + 4 host CPUs + one L1 UB switch per
// plane), 7 planes, one non-blocking L2 switch per plane joining the nodes; figures from the
// public description of the machine (docs/architecture.md, "The simulated machine"). n8, n16
// and n64 are the same machine cut down to 1, 2 and 8 nodes, for tests.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::sim {

// The shape a uniform supernode is generated from.
struct UniformShape {
  std::string name;
  uint32_t nodes = 48;
  uint32_t npus_per_node = 8;
  uint32_t cpus_per_node = 4;
  uint32_t cores_per_cpu = 48;
  uint32_t planes = 7;
  uint32_t dies_per_npu = 2;
  double npu_link_gbps = 56.0;  // per plane, per direction: 7 x 56 = 392 GB/s per NPU
  double hop_latency_ns = 200.0;
  double l1_l2_extra_latency_ns = 0.0;  // added on the cross-node links
};

// Generates a finalized Topology from a shape. L1 uplinks carry the sum of their NPU links
// (L2 is not oversubscribed).
dev::Topology make_uniform(const UniformShape& shape);

// Names of the built-in presets, default first.
std::vector<std::string> preset_names();
// The preset with that name; kNotFound (listing the names) when there is none.
StatusOr<dev::Topology> make_preset(std::string_view name);

}  // namespace moe::sim
