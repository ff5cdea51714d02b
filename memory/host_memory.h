// Host memory for the runtime: plain host buffers from mimalloc, and staging buffers (the
// host side of copies to and from an NPU) placed on a chosen NUMA node with hwloc.
//
// NUMA nodes are named by their hwloc *logical* index (0..num_numa_nodes()-1, the order of
// hwloc_get_obj_by_type(topology, HWLOC_OBJ_NUMANODE, i)); which node an NPU should use is
// the runtime layer's decision, made from the topology, not this layer's.
//
// Binding policy for a staging buffer on node i:
//  - host with several NUMA nodes: hwloc_alloc_membind(BIND, STRICT) on node i's nodeset
//    -> Placement::kBound; when the OS refuses (no permission, no NUMA support) the buffer
//    comes from mimalloc instead -> kNotPermitted, with the reason in note();
//  - host with one NUMA node: binding changes nothing, so mimalloc -> kSingleNode (unless
//    HostMemoryOptions::bind_single_node asks to bind anyway, which tests use to exercise
//    the binding path);
//  - synthetic topology (tests of multi-socket placement on a one-socket machine): the node
//    is resolved but nothing can be bound -> kSynthetic.
// The first fallback of each kind is logged at info level, later ones at debug.
//
// Thread-safety: HostMemory's functions are thread-safe; a StagingBuffer is a value owned
// by one thread at a time. A HostMemory must outlive its staging buffers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/base/status.h"

struct hwloc_topology;

namespace moe::mem {

// ---- host buffers (mimalloc) ----
// `bytes` at `alignment` (a power of two); nullptr when out of memory.
void* host_alloc(size_t bytes, size_t alignment = 64);
// Frees what host_alloc returned; nullptr is ignored.
void host_free(void* p);
struct HostFree {
  void operator()(void* p) const { host_free(p); }
};
using HostBuffer = std::unique_ptr<void, HostFree>;

// ---- staging buffers (hwloc) ----
enum class Placement : uint8_t {
  kBound = 0,         // pages bound to the node (hwloc_alloc_membind, BIND + STRICT)
  kSingleNode = 1,    // not bound: the host has one NUMA node
  kSynthetic = 2,     // not bound: the topology is synthetic
  kNotPermitted = 3,  // not bound: the OS refused; see note()
};
const char* placement_name(Placement placement);

class HostMemory;

class StagingBuffer {
 public:
  StagingBuffer() = default;
  StagingBuffer(StagingBuffer&& other) noexcept { *this = std::move(other); }
  StagingBuffer& operator=(StagingBuffer&& other) noexcept;
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;
  ~StagingBuffer() { reset(); }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  uint32_t numa_node() const { return numa_node_; }  // logical index asked for
  Placement placement() const { return placement_; }
  const std::string& note() const { return note_; }  // what was done, for a person
  void reset();

 private:
  friend class HostMemory;
  HostMemory* owner_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  uint32_t numa_node_ = 0;
  Placement placement_ = Placement::kSingleNode;
  std::string note_;
};

struct HostMemoryOptions {
  std::string synthetic;          // hwloc synthetic description; empty: this host
  std::string xml_file;           // or an hwloc XML export of another host (not this system:
                                  // treated like a synthetic topology, nothing is bound)
  bool bind_single_node = false;  // bind even when the host has one NUMA node
};

class HostMemory {
 public:
  // Loads the topology (a few milliseconds). kInvalidArgument for a bad synthetic string.
  static StatusOr<std::unique_ptr<HostMemory>> create(const HostMemoryOptions& options = {});
  ~HostMemory();
  HostMemory(const HostMemory&) = delete;
  HostMemory& operator=(const HostMemory&) = delete;

  uint32_t num_numa_nodes() const { return num_numa_nodes_; }
  // True when the topology is not this system (synthetic, or loaded from XML).
  bool synthetic() const { return !options_.synthetic.empty() || !options_.xml_file.empty(); }
  // The OS index of a logical node (what numactl calls the node); kOutOfRange for a bad one.
  StatusOr<uint32_t> os_index(uint32_t numa_node) const;

  // `bytes` (> 0) of host memory for staging on `numa_node` (logical index). Page aligned
  // when bound, 64-byte aligned otherwise. kOutOfRange names the node and how many exist;
  // kOutOfMemory the size.
  StatusOr<StagingBuffer> allocate_staging(size_t bytes, uint32_t numa_node);
  // The logical NUMA node the OS binds [p, p + bytes) to, or -1 when it is not bound to
  // exactly one node. kUnsupported on a synthetic topology.
  StatusOr<int> bound_node(const void* p, size_t bytes) const;

 private:
  friend class StagingBuffer;
  explicit HostMemory(const HostMemoryOptions& options) : options_(options) {}
  void note_fallback(Placement placement, const std::string& why);
  void release(StagingBuffer& buffer);

  HostMemoryOptions options_;
  hwloc_topology* topology_ = nullptr;
  uint32_t num_numa_nodes_ = 0;
  std::atomic<uint32_t> logged_{0};  // bit per Placement already logged at info
};

}  // namespace moe::mem
