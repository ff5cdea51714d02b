// Small and medium blocks of one NPU: size-class slabs, each slab one global page.
//
// A slab is host-side metadata about one page of this NPU's HBM cut into equal blocks: a
// state byte per block (1: allocated to a caller, 0: not), a stack of free block indexes and
// a bump index for blocks never used. Nothing is stored in device memory, so a bad free can
// not corrupt anything there.
//
// Blocks move between a slab and thread caches in batches (take / give_back) under the
// bin's lock; a thread cache then hands them to callers without locks (GlobalMemory's fast
// path). A slab whose blocks are all back is unmapped and its page and frame returned, except
// the last slab of a bin, which is kept to avoid thrashing at the edge. Slab objects are never
// deleted before the heap: a parked slab is reused for the same class, so a stale pointer
// read from the page table during a racing (buggy) double free still points to live memory.
//
// Slabs with free blocks are kept in kOccupancyBuckets lists per class by how full they
// are; a refill takes from the fullest non-full slab, so allocation concentrates on few
// slabs and sparsely used ones drain and are released (this is what bounds fragmentation
// under churn, e.g. KV-cache blocks whose owners finish in random order).
//
// Thread-safety: take/give_back are thread-safe (one lock per size class).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "memory/size_classes.h"
#include "memory/slab.h"
#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::mem {

class MemCore;

struct SlabHeapSnapshot {
  uint64_t slabs = 0;
  uint64_t free_block_bytes = 0;
};

class SlabHeap {
 public:
  SlabHeap(MemCore& core, dev::NpuId npu);
  ~SlabHeap();

  // Moves between 1 and `want` blocks of class `c` into out[], *got says how many. Creates
  // a slab when none has a free block. kOutOfMemory (the pool's reason) when no page can be
  // had.
  Status take(uint32_t c, uint32_t want, CachedBlock* out, uint32_t* got);
  // Returns blocks of class `c` (their state bytes already 0).
  void give_back(uint32_t c, const CachedBlock* blocks, uint32_t n);

  SlabHeapSnapshot snapshot();

 private:
  static constexpr int32_t kOccupancyBuckets = 4;
  struct Bin {
    std::mutex mu;
    Slab* head[kOccupancyBuckets] = {};  // bucket b: b/4 <= used fraction < (b+1)/4
    Slab* tail[kOccupancyBuckets] = {};
    uint32_t slabs = 0;  // live slabs of the class, listed or full
    std::vector<Slab*> parked;
  };
  Status new_slab_locked(Bin& bin, uint32_t c, Slab** out);
  void release_slab_locked(Bin& bin, Slab* slab);
  // Puts the slab on the list its occupancy calls for (none when full).
  static void relist(Bin& bin, Slab* s);
  static void list_remove(Bin& bin, Slab* s);

  MemCore& core_;
  const dev::NpuId npu_;
  std::unique_ptr<Bin[]> bins_;
  std::mutex owned_mu_;
  std::vector<std::unique_ptr<Slab>> owned_;  // every Slab object ever made
};

}  // namespace moe::mem
