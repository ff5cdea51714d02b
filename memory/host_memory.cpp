// Bound buffers come from hwloc_alloc_membind (an mmap + mbind underneath) and go back with
// hwloc_free; everything else is mimalloc. A StagingBuffer remembers which, through its
// placement: only kBound buffers were allocated by hwloc.
#include "memory/host_memory.h"

#include <hwloc.h>
#include <mimalloc.h>

#include <cerrno>
#include <cstring>

#include "runtime/base/log.h"

namespace moe::mem {

void* host_alloc(size_t bytes, size_t alignment) {
  return mi_malloc_aligned(bytes == 0 ? 1 : bytes, alignment);
}

void host_free(void* p) { mi_free(p); }

const char* placement_name(Placement placement) {
  switch (placement) {
    case Placement::kBound: return "bound";
    case Placement::kSingleNode: return "single-node";
    case Placement::kSynthetic: return "synthetic";
    case Placement::kNotPermitted: return "not-permitted";
  }
  return "unknown";
}

StagingBuffer& StagingBuffer::operator=(StagingBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    owner_ = other.owner_;
    data_ = other.data_;
    bytes_ = other.bytes_;
    numa_node_ = other.numa_node_;
    placement_ = other.placement_;
    note_ = std::move(other.note_);
    other.owner_ = nullptr;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void StagingBuffer::reset() {
  if (data_ != nullptr && owner_ != nullptr) owner_->release(*this);
  data_ = nullptr;
  bytes_ = 0;
  owner_ = nullptr;
}

StatusOr<std::unique_ptr<HostMemory>> HostMemory::create(const HostMemoryOptions& options) {
  std::unique_ptr<HostMemory> m(new HostMemory(options));
  if (hwloc_topology_init(&m->topology_) != 0) {
    return make_error(StatusCode::kInternal, "hwloc_topology_init failed: %s", std::strerror(errno));
  }
  if (!options.synthetic.empty() &&
      hwloc_topology_set_synthetic(m->topology_, options.synthetic.c_str()) != 0) {
    return make_error(StatusCode::kInvalidArgument, "hwloc synthetic topology '%s' is not valid",
                      options.synthetic.c_str());
  }
  if (options.synthetic.empty() && !options.xml_file.empty() &&
      hwloc_topology_set_xml(m->topology_, options.xml_file.c_str()) != 0) {
    return make_error(StatusCode::kInvalidArgument, "hwloc XML topology '%s' cannot be read",
                      options.xml_file.c_str());
  }
  if (hwloc_topology_load(m->topology_) != 0) {
    return make_error(StatusCode::kInternal, "hwloc_topology_load failed: %s", std::strerror(errno));
  }
  const int n = hwloc_get_nbobjs_by_type(m->topology_, HWLOC_OBJ_NUMANODE);
  m->num_numa_nodes_ = n > 0 ? static_cast<uint32_t>(n) : 1;
  return m;
}

HostMemory::~HostMemory() {
  if (topology_) hwloc_topology_destroy(topology_);
}

StatusOr<uint32_t> HostMemory::os_index(uint32_t numa_node) const {
  hwloc_obj_t node = hwloc_get_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, numa_node);
  if (node == nullptr) {
    return make_error(StatusCode::kOutOfRange, "NUMA node %u does not exist (the host has %u)",
                      numa_node, num_numa_nodes_);
  }
  return static_cast<uint32_t>(node->os_index);
}

void HostMemory::note_fallback(Placement placement, const std::string& why) {
  const uint32_t bit = 1u << static_cast<uint32_t>(placement);
  if ((logged_.fetch_or(bit) & bit) == 0) {
    MOE_INFO("staging buffers not bound to a NUMA node (%s): %s", placement_name(placement),
             why.c_str());
  } else {
    MOE_DEBUG("staging buffer not bound (%s): %s", placement_name(placement), why.c_str());
  }
}

StatusOr<StagingBuffer> HostMemory::allocate_staging(size_t bytes, uint32_t numa_node) {
  if (bytes == 0) return make_error(StatusCode::kInvalidArgument, "allocate_staging: size 0");
  hwloc_obj_t node = hwloc_get_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, numa_node);
  if (node == nullptr) {
    return make_error(StatusCode::kOutOfRange,
                      "allocate_staging: NUMA node %u does not exist (the host has %u)", numa_node,
                      num_numa_nodes_);
  }
  StagingBuffer b;
  b.owner_ = this;
  b.bytes_ = bytes;
  b.numa_node_ = numa_node;
  const bool try_bind = !synthetic() && (num_numa_nodes_ > 1 || options_.bind_single_node);
  if (try_bind) {
    errno = 0;
    void* p = hwloc_alloc_membind(topology_, bytes, node->nodeset, HWLOC_MEMBIND_BIND,
                                  HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_STRICT);
    if (p != nullptr) {
      b.data_ = p;
      b.placement_ = Placement::kBound;
      b.note_ = strformat("bound to NUMA node %u (os index %u) with hwloc_alloc_membind", numa_node,
                          node->os_index);
      return b;
    }
    b.placement_ = Placement::kNotPermitted;
    b.note_ = strformat("binding to NUMA node %u (os index %u) refused: %s; allocated unbound",
                        numa_node, node->os_index, std::strerror(errno));
  } else if (synthetic()) {
    b.placement_ = Placement::kSynthetic;
    b.note_ = strformat("synthetic topology: NUMA node %u (os index %u) resolved, nothing bound",
                        numa_node, node->os_index);
  } else {
    b.placement_ = Placement::kSingleNode;
    b.note_ = "the host has one NUMA node: nothing to bind";
  }
  note_fallback(b.placement_, b.note_);
  b.data_ = mi_malloc_aligned(bytes, 64);
  if (b.data_ == nullptr) {
    b.owner_ = nullptr;
    return make_error(StatusCode::kOutOfMemory, "allocate_staging: %zu bytes of host memory", bytes);
  }
  return b;
}

void HostMemory::release(StagingBuffer& b) {
  if (b.placement_ == Placement::kBound) hwloc_free(topology_, b.data_, b.bytes_);
  else mi_free(b.data_);
}

StatusOr<int> HostMemory::bound_node(const void* p, size_t bytes) const {
  if (synthetic()) {
    return make_error(StatusCode::kUnsupported, "bound_node: the topology is synthetic");
  }
  hwloc_bitmap_t nodeset = hwloc_bitmap_alloc();
  hwloc_membind_policy_t policy;
  const int rc = hwloc_get_area_membind(topology_, p, bytes, nodeset, &policy, HWLOC_MEMBIND_BYNODESET);
  int result = -1;
  if (rc == 0 && policy == HWLOC_MEMBIND_BIND && hwloc_bitmap_weight(nodeset) == 1) {
    const unsigned os = static_cast<unsigned>(hwloc_bitmap_first(nodeset));
    for (uint32_t i = 0; i < num_numa_nodes_; ++i) {
      hwloc_obj_t node = hwloc_get_obj_by_type(topology_, HWLOC_OBJ_NUMANODE, i);
      if (node && node->os_index == os) result = static_cast<int>(i);
    }
  }
  hwloc_bitmap_free(nodeset);
  if (rc != 0) {
    return make_error(StatusCode::kUnsupported, "hwloc_get_area_membind: %s", std::strerror(errno));
  }
  return result;
}

}  // namespace moe::mem
