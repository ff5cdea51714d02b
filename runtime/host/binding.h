// Applying a placement: binding the calling thread to host PUs and host memory to a NUMA
// node, and reading back where things are.
//
// Binding is only meaningful on the machine the topology describes: on a synthetic or XML
// topology every binding call returns kUnsupported (the plan can still be computed and
// checked; see placement.h). Memory allocation is different: staging buffers are needed
// whatever the topology, so alloc_on_node() falls back to an ordinary page-aligned
// allocation when it cannot bind, and says so in NodeAllocation::bound / how.
//
// NUMA nodes are named by logical index (HostSummary::numa_nodes), PUs by OS index (CpuSet).
// Thread-safety: every function may be called from any thread concurrently with the others
// on the same HostTopology (hwloc's binding calls do not modify the topology).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/host/cpu_set.h"
#include "runtime/host/host_topology.h"

namespace moe::rt::host {

// Binds the calling thread to `cpus` (the OS may run it on any of them). Errors:
// kFailedPrecondition (topology not loaded), kUnsupported (not this system, the OS has no
// thread binding, or refused it), kInvalidArgument (empty set, or a PU the topology does not
// have or this process may not use).
Status bind_current_thread(const HostTopology& topology, const CpuSet& cpus);
// The PUs the calling thread is currently allowed to run on. kUnsupported as above.
StatusOr<CpuSet> current_thread_binding(const HostTopology& topology);

// Memory obtained from alloc_on_node. Free it with free_on_node and the same topology.
struct NodeAllocation {
  void* ptr = nullptr;  // page-aligned; contents unspecified
  size_t bytes = 0;
  uint32_t numa_node = 0;  // the node asked for (logical index)
  bool bound = false;      // true: pages are bound to numa_node (hwloc BIND policy)
  std::string how;         // "bound to NUMA L#0 (P#0)" or why it was not bound
};

// Allocates `bytes` whose pages will be placed on `numa_node` (on first touch, as the kernel
// does for bound memory). When binding is impossible (not this system, no OS support, or the
// kernel refuses), falls back to a plain page-aligned allocation: bound = false, `how` says
// why. Errors: kFailedPrecondition (not loaded), kInvalidArgument (bytes 0), kOutOfRange (no
// such node), kOutOfMemory (bytes exceed the node's memory, or allocation failed).
StatusOr<NodeAllocation> alloc_on_node(const HostTopology& topology, uint32_t numa_node,
                                       size_t bytes);
// Returns the memory and resets `allocation`. No-op when allocation.ptr is null.
// Precondition: `allocation` came from alloc_on_node with this same topology.
void free_on_node(const HostTopology& topology, NodeAllocation& allocation);

// How an area's pages are bound: the policy hwloc reads back and the nodes (logical indexes).
struct AreaBinding {
  std::string policy;  // "bind", "firsttouch", "interleave", "nexttouch", "default", "mixed"
  std::vector<uint32_t> numa_nodes;
};
StatusOr<AreaBinding> area_binding(const HostTopology& topology, const void* ptr, size_t bytes);
// The nodes (logical indexes) that physically hold the area's pages. Pages never touched
// hold no memory yet and are not counted: write to the area first. kUnsupported when not
// this system or the OS cannot tell.
StatusOr<std::vector<uint32_t>> area_location(const HostTopology& topology, const void* ptr,
                                              size_t bytes);

// An owning handle on one alloc_on_node allocation. Move-only; the topology must outlive it.
class NodeBuffer {
 public:
  static StatusOr<NodeBuffer> allocate(const HostTopology& topology, uint32_t numa_node,
                                       size_t bytes);
  NodeBuffer() = default;
  NodeBuffer(NodeBuffer&& other) noexcept;
  NodeBuffer& operator=(NodeBuffer&& other) noexcept;
  NodeBuffer(const NodeBuffer&) = delete;
  NodeBuffer& operator=(const NodeBuffer&) = delete;
  ~NodeBuffer() { reset(); }

  void* data() const { return allocation_.ptr; }
  size_t size() const { return allocation_.bytes; }
  const NodeAllocation& allocation() const { return allocation_; }
  void reset();  // frees now; the buffer becomes empty

 private:
  const HostTopology* topology_ = nullptr;
  NodeAllocation allocation_;
};

}  // namespace moe::rt::host
