// Where the host side of each NPU runs: the NUMA-affine placement plan.
//
// The supernode description says which of its host CPUs each NPU is near (NpuDesc::near_cpu;
// every supernode CPU is one NUMA domain). The machine we actually run on has its own NUMA
// nodes (HostSummary). plan_placement() maps one onto the other and decides, for every NPU,
// which host NUMA node its staging buffers live on and which host core its dispatch thread
// is bound to. The plan is plain data: computing it needs no binding rights, so a plan for a
// 2-package, 8-node host can be made and checked on a 1-node laptop (synthetic topologies).
//
// The rules, all deterministic (same inputs, same plan):
//  1. Eligible host nodes: those with at least one core of their own (CoreInfo::numa_node).
//     Memory-only nodes get no dispatch threads; a note says so.
//  2. Supernode CPU c of C goes to eligible node E[floor(c * H / C)] (H eligible nodes): a
//     proportional block mapping. Each host node receives floor(C/H) or ceil(C/H) supernode
//     CPUs, and neighbouring CPUs (the 4 CPUs of one supernode node) land on the same host
//     node where they can, so traffic inside a supernode node stays inside a host node.
//     With more host nodes than supernode CPUs, the CPUs spread out (one per node, evenly
//     spaced) and the other nodes stay unused.
//  3. Dispatch threads: the NPUs near each supernode CPU, in id order, are cut into groups of
//     npus_per_thread; one thread per group. A thread lives on its CPU's host node, so all
//     of a thread's NPUs share one host node.
//  4. The T threads of a host node spread over its K usable cores (the node's cores in
//     logical order, at most cores_per_node of them): thread j (in thread order) takes core
//     floor(j * K / T). With T <= K every thread has a core to itself, spread across the
//     node; with T > K threads share cores, each core carrying floor(T/K) or ceil(T/K)
//     threads, consecutive threads together. A thread's cpuset is its core's PUs.
//  5. notes: one line per decision a person would want to know about (CPUs per host node,
//     cores shared, nodes left out, limits applied).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/device/topology.h"
#include "runtime/host/cpu_set.h"
#include "runtime/host/host_topology.h"

namespace moe::rt::host {

struct PlacementOptions {
  uint32_t npus_per_thread = 1;  // >= 1
  uint32_t cores_per_node = 0;   // 0 = every core of the node
  // The values of RT_HOST_NPUS_PER_THREAD and RT_HOST_CORES_PER_NODE (host_options.h).
  static PlacementOptions from_options();
};

struct DispatchThreadPlan {
  uint32_t index = 0;
  dev::CpuId supernode_cpu = 0;
  std::vector<dev::NpuId> npus;  // ascending
  uint32_t numa_node = 0;        // host NUMA node, logical index
  uint32_t core = 0;             // host core, index into HostSummary::cores
  CpuSet cpus;                   // the PUs the thread is bound to (the core's)
  uint32_t threads_on_core = 1;  // dispatch threads sharing that core, this one included
  bool operator==(const DispatchThreadPlan&) const = default;
};

struct NpuPlacement {
  dev::CpuId supernode_cpu = 0;
  uint32_t numa_node = 0;  // host NUMA node for its staging buffers, logical index
  uint32_t thread = 0;     // index into PlacementPlan::threads
  bool operator==(const NpuPlacement&) const = default;
};

// What one host NUMA node received. Listed for every node of the host, used or not.
struct HostNodePlan {
  uint32_t numa_node = 0;                   // logical index
  bool eligible = false;                    // has cores of its own
  std::vector<dev::CpuId> supernode_cpus;   // ascending
  std::vector<uint32_t> cores;              // cores carrying dispatch threads (HostSummary index)
  uint32_t num_threads = 0;
  uint32_t max_threads_per_core = 0;
  bool operator==(const HostNodePlan&) const = default;
};

struct PlacementPlan {
  std::vector<uint32_t> cpu_numa_node;  // [supernode cpu] -> host NUMA node (logical)
  std::vector<NpuPlacement> npus;       // [npu]
  std::vector<DispatchThreadPlan> threads;
  std::vector<HostNodePlan> nodes;      // [host NUMA node]
  std::vector<std::string> notes;
  uint32_t cores_used = 0;   // distinct host cores carrying dispatch threads
  bool cores_shared = false; // some core carries more than one dispatch thread

  // Precondition: npu < npus.size().
  const DispatchThreadPlan& thread_of(dev::NpuId npu) const { return threads[npus[npu].thread]; }
  std::string to_json() const;
  // Summary, per-node lines and notes; with per_thread, one line per dispatch thread too.
  std::string to_text(bool per_thread = false) const;
  bool operator==(const PlacementPlan&) const = default;
};

// Plans dispatch threads and staging memory for `supernode` on `host`. Errors:
// kInvalidArgument (npus_per_thread 0; an NPU whose near_cpu names no supernode CPU; NPUs
// but no supernode CPUs), kFailedPrecondition (the host has no cores). Logs the notes at
// info level. Pure: no binding, no allocation beyond the plan.
StatusOr<PlacementPlan> plan_placement(const dev::Topology& supernode, const HostSummary& host,
                                       const PlacementOptions& options);
inline StatusOr<PlacementPlan> plan_placement(const dev::Topology& supernode,
                                              const HostTopology& host,
                                              const PlacementOptions& options) {
  return plan_placement(supernode, host.summary(), options);
}

}  // namespace moe::rt::host
