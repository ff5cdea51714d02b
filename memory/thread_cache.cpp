// Instances are named by a never-reused 64-bit id. A process-wide map id -> live registry,
// under one mutex, lets a thread's exit handler tell whether the instance its cache belongs
// to still exists: the handler flushes under that mutex, and an instance removes itself from
// the map (under the same mutex) before it frees anything, so the two never overlap.
//
// Bin sizes: capacity = clamp(MEM_CACHE_BIN_BYTES / class size, 1, MEM_CACHE_BIN_BLOCKS),
// set when the thread first touches the NPU; a refill takes half a bin (at least one
// block), a spill gives back the upper half.
#include "memory/thread_cache.h"

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <unordered_map>
#include <utility>

#include "memory/mem_core.h"
#include "runtime/base/check.h"

namespace moe::mem {
namespace {

std::mutex g_live_mu;
std::unordered_map<uint64_t, CacheRegistry*>& live_registries() {
  static auto* m = new std::unordered_map<uint64_t, CacheRegistry*>();
  return *m;
}
std::atomic<uint64_t> g_next_id{1};

// Per thread: every cache it made, by instance id; flushed when the thread exits.
struct ThreadExit {
  std::vector<std::pair<uint64_t, ThreadCache*>> caches;
  ~ThreadExit() {
    std::lock_guard<std::mutex> lock(g_live_mu);
    auto& live = live_registries();
    for (auto& [id, tc] : caches) {
      auto it = live.find(id);
      if (it != live.end()) it->second->retire(tc);
    }
  }
};
thread_local ThreadExit t_exit;

}  // namespace

ThreadCache::~ThreadCache() { std::free(bins); }

CacheRegistry::CacheRegistry(MemCore& core)
    : core_(core), id_(g_next_id.fetch_add(1)), bins_per_npu_(core.classes.count()) {
  std::lock_guard<std::mutex> lock(g_live_mu);
  live_registries().emplace(id_, this);
}

CacheRegistry::~CacheRegistry() {
  {
    std::lock_guard<std::mutex> lock(g_live_mu);
    live_registries().erase(id_);
  }
  std::lock_guard<std::mutex> lock(caches_mu_);
  for (ThreadCache* tc : caches_) delete tc;
  caches_.clear();
}

ThreadCache* CacheRegistry::attach() {
  for (auto& [id, tc] : t_exit.caches)
    if (id == id_) return tc;
  auto* tc = new ThreadCache();
  tc->instance_id = id_;
  // All-zero bytes are a valid CacheBin (count 0, capacity 0, no items).
  tc->bins = static_cast<CacheBin*>(
      std::calloc(uint64_t{core_.num_npus} * bins_per_npu_, sizeof(CacheBin)));
  MOE_ASSERT(tc->bins != nullptr);
  tc->storage.resize(core_.num_npus);
  {
    std::lock_guard<std::mutex> lock(caches_mu_);
    caches_.push_back(tc);
  }
  {
    // Forget caches of instances that are gone (their memory went with them).
    std::lock_guard<std::mutex> lock(g_live_mu);
    auto& live = live_registries();
    std::erase_if(t_exit.caches, [&](const auto& e) { return live.find(e.first) == live.end(); });
  }
  t_exit.caches.emplace_back(id_, tc);
  return tc;
}

void CacheRegistry::setup_npu(ThreadCache* tc, dev::NpuId npu) {
  CacheBin* bins = tc->bins + uint64_t{npu} * bins_per_npu_;
  if (bins[0].capacity != 0) return;
  uint64_t total = 0;
  uint32_t caps[kMaxSizeClasses];
  for (uint32_t c = 0; c < bins_per_npu_; ++c) {
    const uint64_t by_bytes = core_.config.cache_bin_bytes / core_.classes.at(c).bytes;
    caps[c] = static_cast<uint32_t>(
        std::clamp<uint64_t>(by_bytes, 1, std::max<uint32_t>(1, core_.config.cache_bin_blocks)));
    total += caps[c];
  }
  tc->storage[npu].reset(new CachedBlock[total]);
  uint64_t at = 0;
  for (uint32_t c = 0; c < bins_per_npu_; ++c) {
    bins[c].items = &tc->storage[npu][at];
    bins[c].capacity = caps[c];
    at += caps[c];
  }
}

Status CacheRegistry::refill(ThreadCache* tc, dev::NpuId npu, uint32_t c) {
  setup_npu(tc, npu);
  CacheBin& bin = tc->bins[uint64_t{npu} * bins_per_npu_ + c];
  const uint32_t n = bin.count.load(std::memory_order_relaxed);
  const uint32_t batch = std::max<uint32_t>(1, bin.capacity / 2);
  uint32_t got = 0;
  MOE_TRY(core_.slabs[npu]->take(c, std::min(batch, bin.capacity - n), bin.items + n, &got));
  bin.count.store(n + got, std::memory_order_relaxed);
  return ok_status();
}

void CacheRegistry::spill(ThreadCache* tc, dev::NpuId npu, uint32_t c) {
  setup_npu(tc, npu);
  CacheBin& bin = tc->bins[uint64_t{npu} * bins_per_npu_ + c];
  const uint32_t n = bin.count.load(std::memory_order_relaxed);
  const uint32_t keep = bin.capacity / 2;
  if (n <= keep) return;
  core_.slabs[npu]->give_back(c, bin.items + keep, n - keep);
  bin.count.store(keep, std::memory_order_relaxed);
}

void CacheRegistry::flush(ThreadCache* tc) {
  for (uint32_t npu = 0; npu < core_.num_npus; ++npu) {
    if (!tc->storage[npu]) continue;
    for (uint32_t c = 0; c < bins_per_npu_; ++c) {
      CacheBin& bin = tc->bins[uint64_t{npu} * bins_per_npu_ + c];
      const uint32_t n = bin.count.load(std::memory_order_relaxed);
      if (n == 0) continue;
      core_.slabs[npu]->give_back(c, bin.items, n);
      bin.count.store(0, std::memory_order_relaxed);
    }
  }
}

void CacheRegistry::flush_current() {
  for (auto& [id, tc] : t_exit.caches)
    if (id == id_) flush(tc);
}

void CacheRegistry::retire(ThreadCache* tc) {
  flush(tc);
  {
    std::lock_guard<std::mutex> lock(caches_mu_);
    std::erase(caches_, tc);
  }
  delete tc;
}

uint64_t CacheRegistry::cached_bytes(dev::NpuId npu) {
  std::lock_guard<std::mutex> lock(caches_mu_);
  uint64_t bytes = 0;
  for (ThreadCache* tc : caches_) {
    const CacheBin* bins = tc->bins + uint64_t{npu} * bins_per_npu_;
    for (uint32_t c = 0; c < bins_per_npu_; ++c)
      bytes += uint64_t{bins[c].count.load(std::memory_order_relaxed)} * core_.classes.at(c).bytes;
  }
  return bytes;
}

Status CacheRegistry::synchronize() {
  for (auto& [id, tc] : t_exit.caches) {
    if (id == id_ && tc->read_depth > 0) {
      return make_error(StatusCode::kFailedPrecondition,
                        "a thread inside a read section cannot wait for readers to drain "
                        "(migrate or synchronize from outside any ReadGuard)");
    }
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint64_t target = epoch_.fetch_add(1, std::memory_order_seq_cst) + 1;
  std::lock_guard<std::mutex> lock(caches_mu_);
  for (ThreadCache* tc : caches_) {
    uint32_t spins = 0;
    while (tc->reader_epoch.load(std::memory_order_acquire) < target) {
      if (++spins > 64) std::this_thread::yield();
    }
  }
  return ok_status();
}

}  // namespace moe::mem
