// Internal: the few structures the allocation fast paths touch, shared by the slab heap,
// the thread caches and GlobalMemory's inlined fast paths (global_memory.h). Not for use
// outside memory/.
//
// A Slab is host-side metadata about one global page of one NPU's HBM cut into equal
// blocks; its first fields are what a free needs (one cache line). A CachedBlock is a block
// on its way between a slab and a caller; a CacheBin is one thread's stack of them for one
// NPU and size class.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "memory/size_classes.h"
#include "runtime/device/topology.h"

namespace moe::mem {

struct CachedBlock {
  uint64_t addr;
  std::atomic<uint8_t>* state;
};

struct CacheBin {
  std::atomic<uint32_t> count{0};  // written by the owner thread only
  uint32_t capacity = 0;           // 0: the bin's NPU is not set up in this cache yet
  CachedBlock* items = nullptr;
};

struct Slab {
  // Read by the free fast path (one cache line): where, which class, how to divide.
  uint64_t base = 0;  // global address of the page; 0 while parked
  // blocks + 1 entries (owned: state_owned): the extra one stays 0, so an address in the
  // page's unused tail reads as "not allocated" without a bounds check.
  std::atomic<uint8_t>* state = nullptr;
  uint64_t magic = 0;                      // SizeClass::magic
  uint32_t block_bytes = 0;
  uint32_t blocks = 0;                     // blocks per slab
  uint32_t class_index = 0;
  uint32_t bin_index = 0;                  // npu * classes + class_index (ThreadCache::bins)
  dev::NpuId npu = 0;
  bool use_magic = false;
  // The rest is the heap's, under its bin lock.
  const SizeClass* size_class = nullptr;
  std::unique_ptr<std::atomic<uint8_t>[]> state_owned;
  std::vector<uint32_t> free_stack;
  uint32_t bump = 0;     // blocks [bump, blocks_per_slab) were never handed out
  uint32_t outside = 0;  // blocks handed out (to callers or thread caches)
  Slab* prev = nullptr;  // in the bin's occupancy list
  Slab* next = nullptr;
  int32_t bucket = -1;   // occupancy list it is on; -1: none (full, or parked)
};

// Block index and exactness of an offset into a slab, without a division when the class
// allows (SizeClass::use_magic). With p = n * m, m = ceil(2^44 / d), n = q d + r, n < 2^22,
// d <= 2^21: p >> 44 == q (size_classes.cpp), and the low 44 bits of p are q e + r m with
// e = m d - 2^44 < d: below 2^22 when r = 0 (q e < n), at least m >= 2^23 when r >= 1.
// So n is a multiple of d exactly when the low 44 bits are below 2^22.
inline bool slab_block_index(const Slab& s, uint64_t offset, uint64_t* index) {
  if (s.use_magic) [[likely]] {
    const uint64_t p = offset * s.magic;
    *index = p >> 44;
    return (p & ((uint64_t{1} << 44) - 1)) < (uint64_t{1} << 22);
  }
  *index = offset / s.block_bytes;
  return *index * s.block_bytes == offset;
}

}  // namespace moe::mem
