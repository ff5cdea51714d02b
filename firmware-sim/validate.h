// The rules a supernode description must obey before a driver is built from it.
//
// validate_topology() checks a dev::Topology (from a preset, a description file, or built in
// code) and refuses it with kInvalidArgument when any rule is broken. Each complaint names
// the field by its path in the description file and says why, e.g.
//   links[12].b: switch 999 does not exist (there are 343 switches)
//   links[3].bandwidth_gbps: must be a finite number > 0 (got 0)
//   npus[5].id: expected 5 (ids are dense and in order), got 4
// Up to kMaxReportedErrors complaints are joined with "; " in the message, first found first;
// the rest are counted.
//
// The rules:
//  - num_nodes 1..kMaxNodes; num_planes 1..dev::kMaxPlanes; dies_per_npu 1..kMaxDiesPerNpu;
//    packet_bytes 1..kMaxPacketBytes and packet_header_bytes < packet_bytes;
//  - every rate, bandwidth and capacity finite and > 0 (host link, BF16, INT8, HBM);
//    matmul efficiencies in (0, 1]; latencies and launch_ns finite and >= 0;
//  - cpus, npus, switches, links: ids dense (the i-th entry has id i); at least one NPU and
//    at most kMaxNpus; every node field < num_nodes; a CPU has cores > 0;
//  - an NPU's index_in_node counts 0, 1, 2, ... over its node's NPUs in id order; its
//    near_cpu exists and sits on the NPU's node;
//  - a switch's level is L1 or L2 and its plane < num_planes; an L1 switch sits on a node
//    < num_nodes (one with no NPUs is fine), an L2 switch on none (node == kInvalidId);
//  - a link's plane < num_planes; its endpoints exist, differ, and are not two NPUs; an NPU
//    joins only an L1 switch of its own node; a switch end has the link's plane;
//    bandwidth finite and > 0;
//  - each NPU has exactly one link on each plane;
//  - on each plane, every NPU reaches every other through that plane's switches.
//
// Thread-safety: pure function of its argument. Cost: linear in the size of the description.
#pragma once

#include <cstdint>

#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::sim {

inline constexpr uint32_t kMaxNodes = 1u << 16;
inline constexpr uint32_t kMaxNpus = 1u << 20;
inline constexpr uint32_t kMaxDiesPerNpu = 64;
inline constexpr uint32_t kMaxPacketBytes = 65536;
inline constexpr uint32_t kMaxReportedErrors = 5;

// OK when `topology` obeys every rule above; otherwise kInvalidArgument naming each broken
// rule by field path. Does not need (and does not read) the derived indexes of finalize().
[[nodiscard]] Status validate_topology(const dev::Topology& topology);

}  // namespace moe::sim
