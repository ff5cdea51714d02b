// Thread and memory binding through hwloc.
//
// Every entry point checks, in order: a loaded topology, that it is this system (a synthetic
// host's PU 37 is not the kernel's CPU 37), hwloc's support flags for the operation, then
// the arguments against the topology. Only then does it call hwloc. Memory allocation is the
// one place that falls back instead of failing, because a staging buffer on the wrong node is
// slower, not wrong; the fallback is reported, never silent. hwloc_alloc/hwloc_free are used
// for both paths so that free_on_node never has to know which one was taken.
#include "runtime/host/binding.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "runtime/host/hwloc_util.h"

namespace moe::rt::host {
namespace {

using detail::Bitmap;

Status check_loaded(const HostTopology& topology, const char* what) {
  if (!topology.loaded())
    return make_error(StatusCode::kFailedPrecondition, "%s: the host topology is not loaded", what);
  return ok_status();
}

Status check_this_system(const HostTopology& topology, const char* what) {
  MOE_TRY(check_loaded(topology, what));
  if (!topology.is_this_system())
    return make_error(StatusCode::kUnsupported,
                      "%s: host topology %s is not this system; placement can be planned on it "
                      "but not applied",
                      what, topology.summary().source.c_str());
  return ok_status();
}

const hwloc_topology_support* support_of(const HostTopology& topology) {
  return hwloc_topology_get_support(topology.native_handle());
}

std::vector<uint32_t> logical_nodes_of(const HostTopology& topology, hwloc_const_bitmap_t nodeset) {
  std::vector<uint32_t> nodes;
  for (const NumaNodeInfo& n : topology.summary().numa_nodes)
    if (hwloc_bitmap_isset(nodeset, n.os_index)) nodes.push_back(n.logical_index);
  return nodes;
}

const char* policy_name(hwloc_membind_policy_t policy) {
  switch (policy) {
    case HWLOC_MEMBIND_DEFAULT: return "default";
    case HWLOC_MEMBIND_FIRSTTOUCH: return "firsttouch";
    case HWLOC_MEMBIND_BIND: return "bind";
    case HWLOC_MEMBIND_INTERLEAVE: return "interleave";
    case HWLOC_MEMBIND_NEXTTOUCH: return "nexttouch";
    case HWLOC_MEMBIND_MIXED: return "mixed";
    default: return "unknown";
  }
}

Status check_area(const void* ptr, size_t bytes, const char* what) {
  if (ptr == nullptr || bytes == 0)
    return make_error(StatusCode::kInvalidArgument, "%s: empty area (ptr %p, %zu bytes)", what, ptr,
                      bytes);
  return ok_status();
}

}  // namespace

Status bind_current_thread(const HostTopology& topology, const CpuSet& cpus) {
  MOE_TRY(check_this_system(topology, "bind thread"));
  if (cpus.empty())
    return make_error(StatusCode::kInvalidArgument, "bind thread: empty cpuset");
  hwloc_topology_t t = topology.native_handle();
  hwloc_const_cpuset_t available = hwloc_get_root_obj(t)->cpuset;
  for (uint32_t pu : cpus.pus()) {
    if (!hwloc_bitmap_isset(available, pu))
      return make_error(StatusCode::kInvalidArgument,
                        "bind thread to PUs %s: PU %u is not one this process may use (PUs %s)",
                        cpus.to_string().c_str(), pu,
                        detail::cpuset_from_bitmap(available).to_string().c_str());
  }
  if (!support_of(topology)->cpubind->set_thread_cpubind)
    return make_error(StatusCode::kUnsupported, "bind thread: this OS offers no thread binding");
  Bitmap set = detail::bitmap_from_cpuset(cpus);
  if (!set) return make_error(StatusCode::kOutOfMemory, "bind thread: bitmap allocation failed");
  if (hwloc_set_cpubind(t, set.get(), HWLOC_CPUBIND_THREAD) != 0)
    return make_error(StatusCode::kUnsupported, "bind thread to PUs %s: the OS refused (%s)",
                      cpus.to_string().c_str(), std::strerror(errno));
  return ok_status();
}

StatusOr<CpuSet> current_thread_binding(const HostTopology& topology) {
  MOE_TRY(check_this_system(topology, "read thread binding"));
  if (!support_of(topology)->cpubind->get_thread_cpubind)
    return make_error(StatusCode::kUnsupported, "read thread binding: not supported by this OS");
  Bitmap set = detail::make_bitmap();
  if (!set) return make_error(StatusCode::kOutOfMemory, "read thread binding: bitmap allocation failed");
  if (hwloc_get_cpubind(topology.native_handle(), set.get(), HWLOC_CPUBIND_THREAD) != 0)
    return make_error(StatusCode::kUnsupported, "read thread binding: %s", std::strerror(errno));
  return detail::cpuset_from_bitmap(set.get());
}

StatusOr<NodeAllocation> alloc_on_node(const HostTopology& topology, uint32_t numa_node,
                                       size_t bytes) {
  MOE_TRY(check_loaded(topology, "allocate on NUMA node"));
  const HostSummary& host = topology.summary();
  if (bytes == 0)
    return make_error(StatusCode::kInvalidArgument, "allocate on NUMA node %u: 0 bytes asked", numa_node);
  if (numa_node >= host.numa_nodes.size())
    return make_error(StatusCode::kOutOfRange,
                      "allocate %zu bytes on NUMA node L#%u: the host has %zu NUMA node(s)", bytes,
                      numa_node, host.numa_nodes.size());
  const NumaNodeInfo& info = host.numa_nodes[numa_node];
  if (info.memory_bytes > 0 && bytes > info.memory_bytes)
    return make_error(StatusCode::kOutOfMemory,
                      "allocate %s on NUMA node L#%u: the node has %s",
                      format_bytes(static_cast<double>(bytes)).c_str(), numa_node,
                      format_bytes(static_cast<double>(info.memory_bytes)).c_str());
  hwloc_topology_t t = topology.native_handle();

  NodeAllocation a;
  a.bytes = bytes;
  a.numa_node = numa_node;
  const hwloc_topology_support* support = support_of(topology);
  if (!topology.is_this_system()) {
    a.how = "not bound: the topology is not this system";
  } else if (!support->membind->bind_membind ||
             !(support->membind->alloc_membind || support->membind->set_area_membind)) {
    a.how = "not bound: this OS offers no memory binding";
  } else {
    hwloc_obj_t node = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, numa_node);
    errno = 0;
    a.ptr = node ? hwloc_alloc_membind(t, bytes, node->nodeset, HWLOC_MEMBIND_BIND,
                                       HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_STRICT |
                                           HWLOC_MEMBIND_NOCPUBIND)
                 : nullptr;
    if (a.ptr) {
      a.bound = true;
      a.how = strformat("bound to NUMA L#%u (P#%u)", numa_node, info.os_index);
    } else {
      a.how = strformat("not bound: the OS refused to bind %s to NUMA L#%u (%s)",
                        format_bytes(static_cast<double>(bytes)).c_str(), numa_node,
                        std::strerror(errno ? errno : EINVAL));
    }
  }
  if (!a.ptr) {
    a.ptr = hwloc_alloc(t, bytes);
    if (!a.ptr)
      return make_error(StatusCode::kOutOfMemory, "allocate %s for NUMA node L#%u failed (%s)",
                        format_bytes(static_cast<double>(bytes)).c_str(), numa_node, a.how.c_str());
    if (topology.is_this_system()) MOE_INFO("staging buffer: %s", a.how.c_str());
  }
  return a;
}

void free_on_node(const HostTopology& topology, NodeAllocation& allocation) {
  if (allocation.ptr == nullptr) return;
  if (topology.loaded()) hwloc_free(topology.native_handle(), allocation.ptr, allocation.bytes);
  allocation = NodeAllocation();
}

StatusOr<AreaBinding> area_binding(const HostTopology& topology, const void* ptr, size_t bytes) {
  MOE_TRY(check_this_system(topology, "read memory binding"));
  MOE_TRY(check_area(ptr, bytes, "read memory binding"));
  if (!support_of(topology)->membind->get_area_membind)
    return make_error(StatusCode::kUnsupported, "read memory binding: not supported by this OS");
  Bitmap nodeset = detail::make_bitmap();
  if (!nodeset) return make_error(StatusCode::kOutOfMemory, "read memory binding: bitmap allocation failed");
  hwloc_membind_policy_t policy = HWLOC_MEMBIND_DEFAULT;
  if (hwloc_get_area_membind(topology.native_handle(), ptr, bytes, nodeset.get(), &policy,
                             HWLOC_MEMBIND_BYNODESET) != 0)
    return make_error(StatusCode::kUnsupported, "read memory binding of %zu bytes at %p: %s", bytes,
                      ptr, std::strerror(errno));
  AreaBinding b;
  b.policy = policy_name(policy);
  b.numa_nodes = logical_nodes_of(topology, nodeset.get());
  return b;
}

StatusOr<std::vector<uint32_t>> area_location(const HostTopology& topology, const void* ptr,
                                              size_t bytes) {
  MOE_TRY(check_this_system(topology, "read memory location"));
  MOE_TRY(check_area(ptr, bytes, "read memory location"));
  if (!support_of(topology)->membind->get_area_memlocation)
    return make_error(StatusCode::kUnsupported, "read memory location: not supported by this OS");
  Bitmap nodeset = detail::make_bitmap();
  if (!nodeset) return make_error(StatusCode::kOutOfMemory, "read memory location: bitmap allocation failed");
  if (hwloc_get_area_memlocation(topology.native_handle(), ptr, bytes, nodeset.get(),
                                 HWLOC_MEMBIND_BYNODESET) != 0)
    return make_error(StatusCode::kUnsupported, "read memory location of %zu bytes at %p: %s",
                      bytes, ptr, std::strerror(errno));
  return logical_nodes_of(topology, nodeset.get());
}

// ---- NodeBuffer ----

StatusOr<NodeBuffer> NodeBuffer::allocate(const HostTopology& topology, uint32_t numa_node,
                                          size_t bytes) {
  NodeBuffer b;
  MOE_TRY_ASSIGN(b.allocation_, alloc_on_node(topology, numa_node, bytes));
  b.topology_ = &topology;
  return b;
}

NodeBuffer::NodeBuffer(NodeBuffer&& other) noexcept
    : topology_(std::exchange(other.topology_, nullptr)),
      allocation_(std::exchange(other.allocation_, NodeAllocation())) {}

NodeBuffer& NodeBuffer::operator=(NodeBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    topology_ = std::exchange(other.topology_, nullptr);
    allocation_ = std::exchange(other.allocation_, NodeAllocation());
  }
  return *this;
}

void NodeBuffer::reset() {
  if (topology_) free_on_node(*topology_, allocation_);
  topology_ = nullptr;
  allocation_ = NodeAllocation();
}

}  // namespace moe::rt::host
