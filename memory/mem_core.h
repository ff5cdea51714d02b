// Internal: the state every part of the memory layer shares (not for use outside memory/).
//
// MemCore owns the page table, the host-delta table, one frame pool per NPU, the layout of
// the global space and the general range allocator, and offers the page operations the
// heaps are built from: map fresh frames at pages (all or nothing) and unmap pages.
//
// Layout of the global space, in pages (2^(va_bits - page_shift) in all):
//   [0, symmetric_pages)        null guard, never mapped
//   symmetric windows           num_npus x symmetric_pages (same offsets on every NPU;
//                               symmetric_pages is a power of two, windows aligned to it)
//   large-block windows         num_npus x large_pages (2 x the NPU's limit each)
//   general space               the rest: slab pages, interleaved, replicated, own-pages
//
// Lock order (outer first): record lock -> heap bin / large-heap lock -> general-space lock
// -> frame-pool lock. Page-table entries and owners are changed only with atomic stores and
// exchanges, so translation never takes a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "memory/extent_allocator.h"
#include "memory/frame_pool.h"
#include "memory/mem_options.h"
#include "memory/page_table.h"
#include "memory/size_classes.h"
#include "runtime/base/stats.h"
#include "runtime/device/driver.h"

namespace moe::mem {

class SlabHeap;
class LargeHeap;

struct Layout {
  uint64_t total_pages = 0;
  uint64_t symmetric_first_page = 0;
  uint64_t symmetric_pages = 0;  // per NPU
  uint64_t large_first_page = 0;
  uint64_t large_pages = 0;  // per NPU
  uint64_t general_first_page = 0;
  uint64_t general_pages = 0;
};

// Per-NPU counters kept outside the heaps' locks.
struct NpuCounters {
  stats::Gauge in_use;                      // bytes handed out (slabs: incl. thread caches)
  std::atomic<int64_t> slab_free_bytes{0};  // free blocks inside live slabs
  std::atomic<int64_t> slab_pages{0};
  std::atomic<int64_t> policy_pages{0};     // pages of interleaved/symmetric/replicated/own
  std::atomic<int64_t> pages_migrated_in{0};
  std::atomic<int64_t> pages_migrated_out{0};
};

class MemCore {
 public:
  // Validates the config against the driver's topology; nothing is reserved yet.
  static StatusOr<std::unique_ptr<MemCore>> create(dev::Driver* driver, const MemConfig& config);
  ~MemCore();

  dev::Driver* const driver;
  const MemConfig config;
  const uint32_t num_npus;
  const uint32_t page_shift;
  const uint64_t page_bytes;
  const uint64_t limit_bytes;  // per NPU
  const uint32_t max_slots;
  PageTable table;
  const SizeClasses classes;
  Layout layout;
  // [npu * max_slots + slot]; calloc'd (all-zero bytes are valid atomics), so rows of NPUs
  // never used cost no host memory.
  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<std::atomic<intptr_t>[], FreeDeleter> host_delta;
  std::vector<std::unique_ptr<FramePool>> pools;
  std::vector<std::unique_ptr<SlabHeap>> slabs;
  std::vector<std::unique_ptr<LargeHeap>> large;
  std::unique_ptr<NpuCounters[]> counters;

  // ---- pages ----
  // Maps fresh frames of `npu` at every page of `gpns` (currently unmapped), with `owner`.
  // All or nothing: on error nothing is mapped. kOutOfMemory carries the pool's reason.
  Status map_fresh(const uint64_t* gpns, size_t count, dev::NpuId npu, uintptr_t owner);
  // Clears a page's owner and entry and returns its frame to whichever NPU holds it now
  // (after migration that may not be the NPU it was mapped on). No-op when unmapped.
  void unmap(uint64_t gpn);
  void* host_of(uint64_t entry) const {
    const uint64_t off = page_entry::device_page(entry) << page_shift;
    const intptr_t delta =
        host_delta[uint64_t{page_entry::npu(entry)} * max_slots + page_entry::slot(entry)].load(
            std::memory_order_acquire);
    return reinterpret_cast<void*>(delta + static_cast<intptr_t>(off));
  }
  void free_frame_of(uint64_t entry) {
    pools[page_entry::npu(entry)]->free(
        Frame{page_entry::slot(entry), page_entry::device_page(entry)});
  }

  // ---- general space ----
  // `pages` pages at a multiple of `align_pages`; kResourceExhausted when the space is full.
  Status reserve_general(uint64_t pages, uint64_t align_pages, uint64_t* first_gpn);
  void release_general(uint64_t first_gpn, uint64_t pages);

  // ---- errors ----
  // The out-of-memory error for a request: which NPU, how much was asked, how much is free
  // and the largest free block. Other codes in `cause` (an NPU lost) pass through with
  // context added.
  Status out_of_memory(dev::NpuId npu, uint64_t asked_bytes, const char* what,
                       const Status& cause);
  // Free bytes of an NPU and its largest free block (the largest local allocation that
  // can succeed now); see NpuMemStats.
  void free_space(dev::NpuId npu, uint64_t* free_bytes, uint64_t* largest_free_bytes);

 private:
  MemCore(dev::Driver* driver, const MemConfig& config, uint32_t num_npus, uint64_t limit_bytes,
          uint32_t max_slots);
  std::mutex general_mu_;
  ExtentAllocator general_;
};

}  // namespace moe::mem
