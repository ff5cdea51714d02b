// Per-thread caches of small blocks, and the reader epochs that make migration safe.
//
// Each thread that allocates from (or reads through) a GlobalMemory gets one ThreadCache
// for that instance: per NPU it touches, per size class, a small stack of blocks
// (CachedBlock). The fast paths (GlobalMemory::allocate_local / free) pop and push these
// stacks with no lock and no atomic read-modify-write (a free's one exchange is on the
// block's state byte, not on the stack); a stack that runs empty takes a
// batch from the NPU's SlabHeap, one that runs full gives half back. A thread's caches are
// flushed back to the heaps when the thread exits (a thread_local destructor) or on
// flush_current(); they are freed with the instance.
//
// Cached blocks count as handed out in the heaps' statistics; cached_bytes() tells how much
// of that sits in caches (a per-bin count written by its thread alone and read with relaxed
// loads, so a snapshot taken while threads run is approximate).
//
// Reader epochs (for migration): a reader pins the current epoch in its ThreadCache before
// translating (enter_read) and unpins after its last access (exit_read). synchronize()
// advances the epoch and waits until no thread is still pinned at an older one; so once it
// returns, no reader can still use a translation made before it was called. Fences: reader
// stores its pin then issues a seq_cst fence before loading entries; the migrator stores
// entries, issues a seq_cst fence, then reads pins (the store-buffer pattern): either the
// migrator sees the pin and waits, or the reader sees the new entry.
//
// Thread-safety: attach/flush_current/enter_read/exit_read concern the calling thread; the
// other functions are thread-safe. A GlobalMemory must not be destroyed while other threads
// still use it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "memory/slab_heap.h"
#include "runtime/base/status.h"

namespace moe::mem {

class MemCore;

inline constexpr uint64_t kIdleEpoch = ~uint64_t{0};

struct ThreadCache {
  uint64_t instance_id = 0;
  // Every bin of every NPU in one flat array, [npu * classes + class], so the fast paths
  // reach a bin in one load. calloc'd: bins of NPUs this thread never touches cost no
  // host memory.
  CacheBin* bins = nullptr;
  std::vector<std::unique_ptr<CachedBlock[]>> storage;  // by NPU, once set up
  std::atomic<uint64_t> reader_epoch{kIdleEpoch};
  uint32_t read_depth = 0;
  ~ThreadCache();
};

class CacheRegistry {
 public:
  explicit CacheRegistry(MemCore& core);
  ~CacheRegistry();  // frees every ThreadCache (their blocks go with the heaps)
  CacheRegistry(const CacheRegistry&) = delete;
  CacheRegistry& operator=(const CacheRegistry&) = delete;

  uint64_t id() const { return id_; }
  // The calling thread's cache for this instance (created on first use).
  ThreadCache* attach();
  // Bins per NPU in ThreadCache::bins (the number of size classes).
  uint32_t bins_per_npu() const { return bins_per_npu_; }

  // Slow paths of the fast paths: refill an empty bin (at least one block on success) and
  // make room in a full one; both set the NPU's bins up on first use.
  Status refill(ThreadCache* tc, dev::NpuId npu, uint32_t c);
  void spill(ThreadCache* tc, dev::NpuId npu, uint32_t c);
  // Gives every block cached by the calling thread back to the heaps.
  void flush_current();

  // Bytes of `npu`'s blocks sitting in thread caches.
  uint64_t cached_bytes(dev::NpuId npu);

  void enter_read(ThreadCache* tc) {
    if (tc->read_depth++ == 0) {
      tc->reader_epoch.store(epoch_.load(std::memory_order_acquire), std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
  }
  void exit_read(ThreadCache* tc) {
    if (--tc->read_depth == 0) tc->reader_epoch.store(kIdleEpoch, std::memory_order_release);
  }
  // Waits until every reader pinned before the call has unpinned. Precondition: the calling
  // thread is not inside a read section (kFailedPrecondition otherwise).
  Status synchronize();

  // Called at thread exit with the process-wide registry lock held.
  void retire(ThreadCache* tc);

 private:
  void flush(ThreadCache* tc);
  void setup_npu(ThreadCache* tc, dev::NpuId npu);

  MemCore& core_;
  const uint64_t id_;
  const uint32_t bins_per_npu_;
  std::atomic<uint64_t> epoch_{1};
  std::mutex caches_mu_;
  std::vector<ThreadCache*> caches_;
};

}  // namespace moe::mem
