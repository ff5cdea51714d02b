// The global unified address space over the HBM of every NPU, and its allocators.
//
// One GlobalMemory per driver. It hands out GlobalAddr ranges under four placement
// policies (global_addr.h) and maps them, page by page, to frames of the NPUs' HBM through
// a page table (page_table.h). Paths:
//  - small and medium local blocks (<= MEM_SLAB_MAX_BYTES): size-class slabs per NPU
//    (slab_heap.h) behind per-thread caches (thread_cache.h): an allocate+free pair takes
//    no lock and one atomic exchange;
//  - large local blocks: a best-fit heap with coalescing per NPU (large_heap.h);
//  - interleaved, symmetric, replicated and own-pages allocations: whole pages of the
//    general space or of the symmetric windows, described by a record.
// Metadata lives in host memory only, so a bad free is refused without touching HBM: every
// free is checked (a double free, an address never allocated, an interior address:
// kInvalidArgument naming the address and what it is). One caveat that every allocator
// shares: once freed memory is handed out again, a stale second free of the old address is
// indistinguishable from a valid free of the new block.
//
// Translation (translate, translate_host) is lock-free: a shift, two dependent loads and an
// add (one more load for the host pointer). A translation is valid for the bytes up to the
// end of its page (contiguous_bytes); consecutive pages may live on different NPUs.
//
// Migration (migrate) moves pages to another NPU while their global addresses stay valid:
// per page, a frame is taken on the target, the bytes are copied through the host mappings,
// and the page-table entry is switched with one atomic compare-exchange; the old frame is
// freed only after every reader that might still use the old translation has left its read
// section. Reader protocol: take a ReadGuard, translate, use the location, drop the guard
// (read() and write() do this for you). Inside a guard a reader sees each page either at its
// old or at its new place, both complete, and never a frame that has been reused. Writers
// must not write a page while it migrates (the copy would miss the write): pages are shared
// by neighbouring small blocks and by the edges of large blocks of one NPU, so migrate such
// allocations only when their neighbours are quiescent too, or give migratable data its own
// pages (AllocRequest::own_pages). Do not free an allocation while it migrates. ReadGuard
// sections must be short and must not wait for a migration (migrate() from inside a guard
// fails with kFailedPrecondition).
//
// Thread-safety: every member function may be called from any thread concurrently, except
// that the instance must outlive every call. Blocking: allocation slow paths and frees of
// large or page-granular blocks take locks; migrate() waits for readers to drain.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "memory/global_addr.h"
#include "memory/mem_options.h"
#include "memory/page_table.h"
#include "memory/size_classes.h"
#include "memory/slab.h"
#include "runtime/base/status.h"
#include "runtime/device/driver.h"

// The two allocation fast paths are small; inlining them lets the compiler drop the Status
// objects of the common case entirely.
#if defined(__GNUC__)
#define MOE_MEM_INLINE [[gnu::always_inline]] inline
#else
#define MOE_MEM_INLINE inline
#endif

namespace moe::mem {

class MemCore;
class CacheRegistry;
class RecordTable;
struct ThreadCache;

namespace detail {
// The calling thread's cache for the instance it used last (one entry; a miss goes through
// GlobalMemory::thread_cache()). Constant-initialised and trivially destructible, so it is
// a plain %fs-relative access from every translation unit.
struct TlsMemo {
  uint64_t instance_id;
  ThreadCache* cache;
  CacheBin* bins;  // cache->bins: [npu * classes + class]
};
inline thread_local TlsMemo t_memo{0, nullptr, nullptr};
}  // namespace detail

// Statistics of one NPU. Bytes. Figures read while other threads allocate are each
// consistent but not with one another.
struct NpuMemStats {
  dev::NpuId npu = dev::kInvalidId;
  // Bytes handed out by this NPU's heaps and placed on it by page-granular allocations
  // (sizes rounded to their class, grain or page), less what sits in thread caches.
  uint64_t in_use_bytes = 0;
  // Peak of in_use_bytes + thread-cached bytes (caches move in batches, so this is an upper
  // bound of the true peak by at most the caches' contents).
  uint64_t peak_in_use_bytes = 0;
  uint64_t thread_cached_bytes = 0;
  // What can still be allocated on this NPU: frames free or within the limit, free blocks
  // of its slabs (cached ones included) and free space on its large heap's mapped pages.
  uint64_t free_bytes = 0;
  // The largest local allocation that can succeed now.
  uint64_t largest_free_block_bytes = 0;
  uint64_t limit_bytes = 0;      // HBM this layer may commit on the NPU
  uint64_t committed_bytes = 0;  // HBM committed from the driver (whole segments)
  uint64_t segments = 0;
  uint64_t resident_bytes = 0;   // frames in use on this NPU, whoever owns the pages
  uint64_t slab_pages = 0;
  uint64_t large_blocks = 0;
  uint64_t large_mapped_pages = 0;
  uint64_t policy_pages = 0;
  uint64_t pages_migrated_in = 0;
  uint64_t pages_migrated_out = 0;
};

struct MigrateResult {
  uint64_t pages_moved = 0;
  uint64_t pages_already_there = 0;
  uint64_t bytes_copied = 0;
};

// What an address is.
struct BlockInfo {
  GlobalAddr start;          // first byte of the allocation (of this part, for a group)
  uint64_t bytes = 0;        // its size as held (rounded to class, grain or page)
  Policy policy = Policy::kLocal;
  dev::NpuId home_npu = dev::kInvalidId;  // the NPU whose heap gave it (kLocal)
  const char* path = "";     // "slab", "large", "pages"
  GlobalAddr allocation_base;  // the Allocation's base (differs from start for group parts)
};

class GlobalMemory {
 public:
  // Nothing is reserved from the driver until memory is asked for. The driver outlives the
  // instance. kInvalidArgument names a bad config field.
  static StatusOr<std::unique_ptr<GlobalMemory>> create(
      dev::Driver* driver, const MemConfig& config = MemConfig::from_options());
  // Returns every segment to the driver; outstanding addresses become invalid.
  ~GlobalMemory();
  GlobalMemory(const GlobalMemory&) = delete;
  GlobalMemory& operator=(const GlobalMemory&) = delete;

  // ---- allocation ----
  // A local block of `bytes` (> 0) on `npu` at `alignment` (0 or a power of two; default
  // 16 bytes for slab sizes, the large grain above). Not zeroed. The fast path (inlined:
  // a pop from this thread's cache; everything else goes out of line).
  MOE_MEM_INLINE StatusOr<GlobalAddr> allocate_local(dev::NpuId npu, uint64_t bytes,
                                                     uint64_t alignment = 0) {
    if (bytes - 1 < slab_max_bytes_ && alignment <= 16 && npu < num_npus_ &&
        detail::t_memo.instance_id == instance_id_) [[likely]] {
      CacheBin& bin = detail::t_memo.bins[uint64_t{npu} * bins_per_npu_ + classes_->index_of(bytes)];
      const uint32_t n = bin.count.load(std::memory_order_relaxed);
      if (n > 0) [[likely]] {
        const CachedBlock block = bin.items[n - 1];
        bin.count.store(n - 1, std::memory_order_relaxed);
        // The block is this thread's until it hands the address out: a relaxed store.
        block.state->store(1, std::memory_order_relaxed);
        return GlobalAddr(block.addr);
      }
    }
    return allocate_local_slow(npu, bytes, alignment);
  }
  // Any policy. Errors: kInvalidArgument (bad request, naming the field), kOutOfMemory
  // (naming the NPU, the bytes asked, its free bytes and largest free block), driver errors
  // such as kNpuLost.
  StatusOr<Allocation> allocate(const AllocRequest& request);
  // Frees the allocation starting at addr (for a group: its base). See the header note for
  // what is caught. Small blocks take the inlined fast path: page-table owner (two loads),
  // block index (multiply-shift), one atomic exchange of the block's state 1 -> 0 (which
  // refuses a second free of the same block, even from two threads at once), a push on
  // this thread's cache.
  MOE_MEM_INLINE Status free(GlobalAddr addr) {
    const uintptr_t owner = view_.owner(addr.value >> page_shift_);
    if (owner_tag(owner) == OwnerTag::kSlab && detail::t_memo.instance_id == instance_id_) [[likely]] {
      Slab* slab = owner_ptr<Slab>(owner);
      const uint64_t offset = addr.value - slab->base;
      uint64_t index = 0;
      // index <= blocks: the state array has one spare entry that is always 0.
      if (offset < page_bytes_ && slab_block_index(*slab, offset, &index) &&
          slab->state[index].exchange(0, std::memory_order_acq_rel) == 1) [[likely]] {
        CacheBin& bin = detail::t_memo.bins[slab->bin_index];
        const uint32_t n = bin.count.load(std::memory_order_relaxed);
        if (n < bin.capacity) [[likely]] {
          bin.items[n] = CachedBlock{addr.value, &slab->state[index]};
          bin.count.store(n + 1, std::memory_order_relaxed);
        } else {
          free_to_full_bin(addr, slab, index);  // full, or the NPU not set up yet
        }
        return ok_status();
      }
    }
    return free_slow(addr, owner);
  }
  Status free(const Allocation& allocation) { return free(allocation.base); }
  // Gives the calling thread's cached blocks back to the heaps (done at thread exit).
  void flush_thread_cache();
  // What `addr` is part of; kNotFound when it is in no live allocation.
  StatusOr<BlockInfo> block_info(GlobalAddr addr);

  // ---- translation (lock-free) ----
  // The device location of a byte; false when its page is unmapped.
  bool translate(GlobalAddr addr, dev::DevicePtr* out) const {
    const uint64_t e = view_.entry(addr.value >> page_shift_);
    if (e == 0) return false;
    out->npu = page_entry::npu(e);
    out->offset = (page_entry::device_page(e) << page_shift_) | (addr.value & page_mask_);
    return true;
  }
  // A host pointer to the byte (through the driver's host mapping); nullptr when unmapped.
  void* translate_host(GlobalAddr addr) const {
    const uint64_t e = view_.entry(addr.value >> page_shift_);
    if (e == 0) return nullptr;
    const intptr_t delta =
        host_delta_[uint64_t{page_entry::npu(e)} * max_slots_ + page_entry::slot(e)].load(
            std::memory_order_acquire);
    return reinterpret_cast<void*>(
        delta + static_cast<intptr_t>((page_entry::device_page(e) << page_shift_) |
                                      (addr.value & page_mask_)));
  }
  // translate() with an error naming the address.
  StatusOr<dev::DevicePtr> locate(GlobalAddr addr) const;
  // Bytes from addr to the end of its page: how far one translation reaches.
  uint64_t contiguous_bytes(GlobalAddr addr) const { return page_bytes_ - (addr.value & page_mask_); }
  uint64_t page_bytes() const { return page_bytes_; }

  // ---- groups ----
  // The replica a reader on `reader` should use: its own NPU's; else the first on its node;
  // else replica (reader mod count), which spreads remote readers evenly (the fabric costs
  // about the same across nodes, so spreading load matters more than distance).
  // Precondition: a kReplicated allocation.
  GlobalAddr replica_for(const Allocation& allocation, dev::NpuId reader) const;
  // Member `member`'s part of a kSymmetric allocation: the same offset in its window.
  StatusOr<GlobalAddr> symmetric_addr(const Allocation& allocation, dev::NpuId member) const;

  // ---- data through the host mappings (simulation, tests, initialisation) ----
  // Copies, splitting at page boundaries, inside a read section. kInvalidArgument when a
  // page of the range is unmapped (nothing is copied).
  Status write(GlobalAddr dst, const void* src, uint64_t bytes);
  Status read(GlobalAddr src, void* dst, uint64_t bytes);
  // Writes the same bytes at `offset` into every part: every replica, every symmetric
  // member; for local and interleaved allocations, at base + offset.
  Status write_all(const Allocation& allocation, uint64_t offset, const void* src, uint64_t bytes);

  // ---- migration ----
  // Moves every page overlapping [addr, addr + bytes) to `target` (pages already there are
  // left). Every page must be mapped (kInvalidArgument otherwise, nothing moved). On
  // kOutOfMemory on the target, the pages before the failing one have moved; each page is
  // whole on one NPU either way. Blocks until readers of the old locations have drained.
  Status migrate(GlobalAddr addr, uint64_t bytes, dev::NpuId target, MigrateResult* result = nullptr);
  // The pages of a local or interleaved allocation (of every part for other policies).
  Status migrate(const Allocation& allocation, dev::NpuId target, MigrateResult* result = nullptr);

  // A read section (see the header note). Nests. Not movable across threads.
  class ReadGuard {
   public:
    explicit ReadGuard(GlobalMemory& memory);
    ~ReadGuard();
    ReadGuard(const ReadGuard&) = delete;
    ReadGuard& operator=(const ReadGuard&) = delete;

   private:
    GlobalMemory* memory_;
    ThreadCache* cache_;
  };
  // Waits until every read section open at the time of the call has closed.
  Status synchronize_readers();

  // ---- statistics ----
  NpuMemStats npu_stats(dev::NpuId npu);
  // {"page_bytes":..,"segment_bytes":..,"npus":[{"npu":0,"in_use_bytes":{current,peak,
  // total},...},...]}. touched_only: only NPUs that ever committed memory.
  std::string stats_json(bool touched_only = true);

  const MemConfig& config() const;
  uint32_t num_npus() const { return num_npus_; }
  dev::Driver* driver() const;

 private:
  explicit GlobalMemory(std::unique_ptr<MemCore> core);
  ThreadCache* thread_cache();
  StatusOr<GlobalAddr> allocate_local_slow(dev::NpuId npu, uint64_t bytes, uint64_t alignment);
  Status free_slow(GlobalAddr addr, uintptr_t owner);
  void free_to_full_bin(GlobalAddr addr, Slab* slab, uint64_t index);
  Status check_npu(dev::NpuId npu, const char* field) const;
  Status migrate_pages(uint64_t first_gpn, uint64_t last_gpn, dev::NpuId target,
                       MigrateResult* result);

  // Hot fields first: read by translation and the fast paths.
  PageTable::View view_;
  uint32_t page_shift_ = 0;
  uint64_t page_mask_ = 0;
  uint64_t page_bytes_ = 0;
  const std::atomic<intptr_t>* host_delta_ = nullptr;
  uint32_t max_slots_ = 0;
  uint32_t num_npus_ = 0;
  uint64_t slab_max_bytes_ = 0;
  const SizeClasses* classes_ = nullptr;
  uint32_t bins_per_npu_ = 0;
  uint64_t instance_id_ = 0;
  std::unique_ptr<MemCore> core_;
  std::unique_ptr<RecordTable> records_;
  std::unique_ptr<CacheRegistry> caches_;  // destroyed first: no flush into dead heaps
};

}  // namespace moe::mem
