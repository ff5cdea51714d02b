// Instances are named by a never-reused 64-bit id. A process-wide map id -> live registry,
// under one mutex, lets a thread's exit handler tell whether the instance its cache belongs
// to still exists: the handler flushes under that mutex, and an instance removes itself from
// the map (under the same mutex) before it frees anything, so the two never overlap.
//
// Bin sizes: capacity = clamp(MEM_CACHE_BIN_BYTES / class size, 1, MEM_CACHE_BIN_BLOCKS);
// a refill takes half a bin (at least one block), a spill gives back the upper half.
#include "memory/thread_cache.h"

#include <algorithm>
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

CacheRegistry::CacheRegistry(MemCore& core) : core_(core), id_(g_next_id.fetch_add(1)) {
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
  tc->npus.reset(new std::atomic<NpuCache*>[core_.num_npus]);
  for (uint32_t i = 0; i < core_.num_npus; ++i) tc->npus[i].store(nullptr, std::memory_order_relaxed);
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

NpuCache* CacheRegistry::npu_cache(ThreadCache* tc, dev::NpuId npu) {
  NpuCache* nc = tc->npus[npu].load(std::memory_order_relaxed);
  if (nc) return nc;
  auto fresh = std::make_unique<NpuCache>();
  const uint32_t classes = core_.classes.count();
  fresh->bins.reset(new CacheBin[classes]);
  uint64_t total = 0;
  for (uint32_t c = 0; c < classes; ++c) {
    const uint64_t by_bytes = core_.config.cache_bin_bytes / core_.classes.at(c).bytes;
    const uint32_t cap = static_cast<uint32_t>(
        std::clamp<uint64_t>(by_bytes, 1, std::max<uint32_t>(1, core_.config.cache_bin_blocks)));
    fresh->bins[c].capacity = cap;
    fresh->bins[c].batch = std::max<uint32_t>(1, cap / 2);
    total += cap;
  }
  fresh->storage.reset(new CachedBlock[total]);
  uint64_t at = 0;
  for (uint32_t c = 0; c < classes; ++c) {
    fresh->bins[c].items = &fresh->storage[at];
    at += fresh->bins[c].capacity;
  }
  nc = fresh.get();
  tc->owned.push_back(std::move(fresh));
  tc->npus[npu].store(nc, std::memory_order_release);
  return nc;
}

Status CacheRegistry::refill(NpuCache* nc, dev::NpuId npu, uint32_t c) {
  CacheBin& bin = nc->bins[c];
  const uint32_t n = bin.count.load(std::memory_order_relaxed);
  uint32_t got = 0;
  MOE_TRY(core_.slabs[npu]->take(c, std::min(bin.batch, bin.capacity - n), bin.items + n, &got));
  bin.count.store(n + got, std::memory_order_relaxed);
  return ok_status();
}

void CacheRegistry::spill(NpuCache* nc, dev::NpuId npu, uint32_t c) {
  CacheBin& bin = nc->bins[c];
  const uint32_t n = bin.count.load(std::memory_order_relaxed);
  const uint32_t keep = bin.capacity / 2;
  if (n <= keep) return;
  core_.slabs[npu]->give_back(c, bin.items + keep, n - keep);
  bin.count.store(keep, std::memory_order_relaxed);
}

void CacheRegistry::flush(ThreadCache* tc) {
  for (uint32_t npu = 0; npu < core_.num_npus; ++npu) {
    NpuCache* nc = tc->npus[npu].load(std::memory_order_relaxed);
    if (!nc) continue;
    for (uint32_t c = 0; c < core_.classes.count(); ++c) {
      CacheBin& bin = nc->bins[c];
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
    NpuCache* nc = tc->npus[npu].load(std::memory_order_acquire);
    if (!nc) continue;
    for (uint32_t c = 0; c < core_.classes.count(); ++c)
      bytes += uint64_t{nc->bins[c].count.load(std::memory_order_relaxed)} *
               core_.classes.at(c).bytes;
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
