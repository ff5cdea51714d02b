// Large blocks of one NPU (above the slab limit): best fit with coalescing over a window of
// global space, at MEM_LARGE_GRAIN_BYTES granularity.
//
// The window is 2 x the NPU's limit of global space, owned by this heap alone. Address
// space is cheap; HBM is not: a page of the window is mapped to a frame only while some live
// block overlaps it (a per-page count of overlapping blocks), and unmapped, its frame given
// back, when the last one is freed. So a block costs its size rounded to the grain, plus at
// most the unused parts of its first and last page, which neighbours share. Best fit (lowest
// address among equals) keeps live blocks packed at the window's start.
//
// Every free is checked against the heap's map of live blocks: the start of a live block is
// freed; anything else is refused with what the address is (inside a block, or free).
//
// Thread-safety: all functions are thread-safe (one lock per heap).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "memory/extent_allocator.h"
#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::mem {

class MemCore;

struct LargeHeapSnapshot {
  uint64_t live_blocks = 0;
  uint64_t live_bytes = 0;    // rounded to the grain
  uint64_t mapped_pages = 0;  // window pages with a frame
};

class LargeHeap {
 public:
  LargeHeap(MemCore& core, dev::NpuId npu, uint64_t first_page, uint64_t pages);

  // A block of at least `bytes` at `alignment` (a power of two; the grain when smaller).
  // On kOutOfMemory the status carries the frame pool's reason (the caller composes the
  // user-facing message); nothing is changed.
  Status allocate(uint64_t bytes, uint64_t alignment, uint64_t* addr);
  // Frees the live block starting at addr. kInvalidArgument naming what addr is otherwise.
  Status free(uint64_t addr);
  // The live block containing addr: false when none.
  bool find(uint64_t addr, uint64_t* start, uint64_t* bytes);

  // The largest block that could be allocated now given `available_frames` free frames.
  uint64_t largest_free_bytes(uint64_t available_frames);
  LargeHeapSnapshot snapshot();
  uint64_t grain_bytes() const { return grain_bytes_; }

 private:
  MemCore& core_;
  const dev::NpuId npu_;
  const uint64_t first_page_;
  const uint64_t pages_;
  const uint32_t grain_shift_;
  const uint64_t grain_bytes_;
  std::mutex mu_;
  ExtentAllocator extents_;          // in grains (absolute: address >> grain_shift)
  std::map<uint64_t, uint64_t> live_;  // start address -> bytes (rounded to the grain)
  std::vector<uint32_t> page_refs_;  // by page - first_page_; grows to the highest page used
  uint64_t live_bytes_ = 0;
  uint64_t mapped_pages_ = 0;
};

}  // namespace moe::mem
