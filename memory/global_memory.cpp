// GlobalMemory: the public face. The allocation fast paths are inlined in the header (a pop
// or a push on the calling thread's cache, found through a thread-local memo); this file
// holds everything they hand off: first use by a thread, empty and full cache bins, other
// sizes and policies, and every error, with a message naming what the address is.
#include "memory/global_memory.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "memory/large_heap.h"
#include "memory/mem_core.h"
#include "memory/records.h"
#include "memory/slab_heap.h"
#include "memory/thread_cache.h"
#include "runtime/base/check.h"
#include "runtime/base/log.h"

namespace moe::mem {

std::string to_string(GlobalAddr addr) {
  return strformat("0x%016llx", static_cast<unsigned long long>(addr.value));
}

const char* policy_name(Policy policy) {
  switch (policy) {
    case Policy::kLocal: return "local";
    case Policy::kInterleaved: return "interleaved";
    case Policy::kSymmetric: return "symmetric";
    case Policy::kReplicated: return "replicated";
  }
  return "unknown";
}

GlobalMemory::GlobalMemory(std::unique_ptr<MemCore> core) : core_(std::move(core)) {
  view_ = core_->table.view();
  page_shift_ = core_->page_shift;
  page_bytes_ = core_->page_bytes;
  page_mask_ = page_bytes_ - 1;
  host_delta_ = core_->host_delta.get();
  max_slots_ = core_->max_slots;
  num_npus_ = core_->num_npus;
  slab_max_bytes_ = core_->classes.max_bytes();
  bins_per_npu_ = core_->classes.count();
  classes_ = &core_->classes;
  records_ = std::make_unique<RecordTable>(*core_);
  caches_ = std::make_unique<CacheRegistry>(*core_);
  instance_id_ = caches_->id();
}

GlobalMemory::~GlobalMemory() = default;

StatusOr<std::unique_ptr<GlobalMemory>> GlobalMemory::create(dev::Driver* driver,
                                                              const MemConfig& config) {
  std::unique_ptr<MemCore> core;
  MOE_TRY_ASSIGN(core, MemCore::create(driver, config));
  return std::unique_ptr<GlobalMemory>(new GlobalMemory(std::move(core)));
}

const MemConfig& GlobalMemory::config() const { return core_->config; }
dev::Driver* GlobalMemory::driver() const { return core_->driver; }

ThreadCache* GlobalMemory::thread_cache() {
  if (detail::t_memo.instance_id == instance_id_) [[likely]]
    return detail::t_memo.cache;
  ThreadCache* tc = caches_->attach();
  detail::t_memo = detail::TlsMemo{instance_id_, tc, tc->bins};
  return tc;
}

Status GlobalMemory::check_npu(dev::NpuId npu, const char* field) const {
  if (npu < num_npus_) return ok_status();
  return make_error(StatusCode::kInvalidArgument, "%s: npu %u does not exist (the machine has %u)",
                    field, npu, num_npus_);
}

// ---- allocation ----

StatusOr<GlobalAddr> GlobalMemory::allocate_local_slow(dev::NpuId npu, uint64_t bytes,
                                                       uint64_t alignment) {
  MOE_TRY(check_npu(npu, "allocate_local"));
  if (bytes == 0) {
    return make_error(StatusCode::kInvalidArgument, "allocate_local(npu %u): size 0", npu);
  }
  if (alignment != 0 && (alignment & (alignment - 1)) != 0) {
    return make_error(StatusCode::kInvalidArgument,
                      "allocate_local(npu %u): alignment %llu is not a power of two", npu,
                      static_cast<unsigned long long>(alignment));
  }
  const uint32_t c = core_->classes.index_of(bytes, std::max<uint64_t>(alignment, 1));
  if (c < core_->classes.count()) {
    ThreadCache* tc = thread_cache();
    CacheBin& bin = tc->bins[uint64_t{npu} * bins_per_npu_ + c];
    if (bin.count.load(std::memory_order_relaxed) == 0) {
      Status s = caches_->refill(tc, npu, c);
      if (!s.ok()) return core_->out_of_memory(npu, bytes, "a small block", s);
    }
    const uint32_t n = bin.count.load(std::memory_order_relaxed);
    const CachedBlock block = bin.items[n - 1];
    bin.count.store(n - 1, std::memory_order_relaxed);
    block.state->store(1, std::memory_order_relaxed);
    return GlobalAddr(block.addr);
  }
  if (alignment > page_bytes_) {
    // Page-aligned beyond a page: whole pages of the general space.
    AllocRequest req;
    req.npu = npu;
    req.bytes = bytes;
    req.alignment = alignment;
    req.own_pages = true;
    Allocation a;
    MOE_TRY_ASSIGN(a, records_->allocate(req));
    return a.base;
  }
  uint64_t addr = 0;
  Status s = core_->large[npu]->allocate(bytes, alignment, &addr);
  if (!s.ok()) return core_->out_of_memory(npu, bytes, "a large block", s);
  return GlobalAddr(addr);
}

StatusOr<Allocation> GlobalMemory::allocate(const AllocRequest& req) {
  const char* policy = policy_name(req.policy);
  if (req.bytes == 0)
    return make_error(StatusCode::kInvalidArgument, "allocate(%s): bytes is 0", policy);
  if (req.alignment != 0 && (req.alignment & (req.alignment - 1)) != 0) {
    return make_error(StatusCode::kInvalidArgument,
                      "allocate(%s): alignment %llu is not a power of two", policy,
                      static_cast<unsigned long long>(req.alignment));
  }
  if (req.policy == Policy::kLocal) {
    MOE_TRY(check_npu(req.npu, "allocate(local): npu"));
    Allocation a;
    a.policy = Policy::kLocal;
    a.bytes = req.bytes;
    if (req.own_pages) {
      MOE_TRY_ASSIGN(a, records_->allocate(req));
      return a;
    }
    MOE_TRY_ASSIGN(a.base, allocate_local(req.npu, req.bytes, req.alignment));
    a.parts.push_back({req.npu, a.base, req.bytes});
    return a;
  }
  if (req.policy != Policy::kInterleaved && req.policy != Policy::kSymmetric &&
      req.policy != Policy::kReplicated) {
    return make_error(StatusCode::kInvalidArgument, "allocate: unknown policy %d",
                      static_cast<int>(req.policy));
  }
  if (req.npus.empty())
    return make_error(StatusCode::kInvalidArgument, "allocate(%s): npus (the group) is empty", policy);
  std::unordered_set<dev::NpuId> seen;
  for (dev::NpuId n : req.npus) {
    MOE_TRY(check_npu(n, strformat("allocate(%s): npus", policy).c_str()));
    if (!seen.insert(n).second) {
      return make_error(StatusCode::kInvalidArgument, "allocate(%s): npu %u appears twice in npus",
                        policy, n);
    }
  }
  if (req.policy == Policy::kInterleaved && req.grain_bytes % page_bytes_ != 0) {
    return make_error(StatusCode::kInvalidArgument,
                      "allocate(interleaved): grain_bytes %llu is not a multiple of the page "
                      "(%llu bytes; chunks are placed through the page table)",
                      static_cast<unsigned long long>(req.grain_bytes),
                      static_cast<unsigned long long>(page_bytes_));
  }
  return records_->allocate(req);
}

void GlobalMemory::free_to_full_bin(GlobalAddr addr, Slab* slab, uint64_t index) {
  caches_->spill(detail::t_memo.cache, slab->npu, slab->class_index);
  CacheBin& bin = detail::t_memo.bins[slab->bin_index];
  const uint32_t n = bin.count.load(std::memory_order_relaxed);
  MOE_ASSERT(n < bin.capacity);
  bin.items[n] = CachedBlock{addr.value, &slab->state[index]};
  bin.count.store(n + 1, std::memory_order_relaxed);
}

Status GlobalMemory::free_slow(GlobalAddr addr, uintptr_t owner) {
  if (addr.is_null()) return make_error(StatusCode::kInvalidArgument, "free(null)");
  switch (owner_tag(owner)) {
    case OwnerTag::kSlab: {
      if (detail::t_memo.instance_id != instance_id_) {
        thread_cache();     // first call from this thread: set the memo up,
        return free(addr);  // then take the fast path
      }
      Slab* slab = owner_ptr<Slab>(owner);
      const SizeClass& sc = *slab->size_class;
      const uint64_t offset = addr.value - slab->base;
      const uint64_t index = offset / sc.bytes;
      if (offset >= page_bytes_ || slab->base == 0) {
        return make_error(StatusCode::kInvalidArgument, "free(%s): not allocated (its page was "
                          "released while this free ran: a double free racing another)",
                          to_string(addr).c_str());
      }
      if (index * sc.bytes != offset) {
        return make_error(StatusCode::kInvalidArgument,
                          "free(%s): not the start of an allocation: it is %llu bytes into the "
                          "%u-byte block at %s (npu %u)",
                          to_string(addr).c_str(),
                          static_cast<unsigned long long>(offset - index * sc.bytes), sc.bytes,
                          to_string(GlobalAddr(slab->base + index * sc.bytes)).c_str(), slab->npu);
      }
      if (index >= sc.blocks_per_slab) {
        return make_error(StatusCode::kInvalidArgument,
                          "free(%s): not allocated: past the last %u-byte block of its slab page "
                          "(npu %u)", to_string(addr).c_str(), sc.bytes, slab->npu);
      }
      return make_error(StatusCode::kInvalidArgument,
                        "free(%s): not allocated: the %u-byte block on npu %u is already free "
                        "(a double free, or never allocated)",
                        to_string(addr).c_str(), sc.bytes, slab->npu);
    }
    case OwnerTag::kLargeHeap:
      return owner_ptr<LargeHeap>(owner)->free(addr.value);
    case OwnerTag::kRecord:
      return records_->free(addr.value);
    case OwnerTag::kNone:
      break;
  }
  return make_error(StatusCode::kInvalidArgument,
                    "free(%s): not allocated: no allocation contains this address (a double "
                    "free, or never allocated)", to_string(addr).c_str());
}

void GlobalMemory::flush_thread_cache() { caches_->flush_current(); }

StatusOr<BlockInfo> GlobalMemory::block_info(GlobalAddr addr) {
  const uintptr_t owner = view_.owner(addr.value >> page_shift_);
  BlockInfo info;
  switch (owner_tag(owner)) {
    case OwnerTag::kSlab: {
      Slab* slab = owner_ptr<Slab>(owner);
      const SizeClass& sc = *slab->size_class;
      const uint64_t offset = addr.value - slab->base;
      const uint64_t index = offset / sc.bytes;
      if (offset < page_bytes_ && index < sc.blocks_per_slab &&
          slab->state[index].load(std::memory_order_acquire) == 1) {
        info.start = GlobalAddr(slab->base + index * sc.bytes);
        info.bytes = sc.bytes;
        info.home_npu = slab->npu;
        info.path = "slab";
        info.allocation_base = info.start;
        return info;
      }
      break;
    }
    case OwnerTag::kLargeHeap: {
      uint64_t start = 0, bytes = 0;
      LargeHeap* heap = owner_ptr<LargeHeap>(owner);
      if (heap->find(addr.value, &start, &bytes)) {
        info.start = GlobalAddr(start);
        info.bytes = bytes;
        info.home_npu = static_cast<dev::NpuId>(
            std::find_if(core_->large.begin(), core_->large.end(),
                         [&](const auto& h) { return h.get() == heap; }) -
            core_->large.begin());
        info.path = "large";
        info.allocation_base = info.start;
        return info;
      }
      break;
    }
    case OwnerTag::kRecord:
      if (records_->find(addr.value, &info)) return info;
      break;
    case OwnerTag::kNone:
      break;
  }
  return make_error(StatusCode::kNotFound, "%s is in no live allocation", to_string(addr).c_str());
}

// ---- translation and groups ----

StatusOr<dev::DevicePtr> GlobalMemory::locate(GlobalAddr addr) const {
  dev::DevicePtr p;
  if (translate(addr, &p)) return p;
  return make_error(StatusCode::kInvalidArgument,
                    "%s is not mapped (global page %llu: never allocated, or freed)",
                    to_string(addr).c_str(), static_cast<unsigned long long>(addr.value >> page_shift_));
}

GlobalAddr GlobalMemory::replica_for(const Allocation& a, dev::NpuId reader) const {
  if (a.parts.empty()) return a.base;
  if (const AllocationPart* own = a.part_on(reader)) return own->addr;
  const dev::Topology& topo = core_->driver->topology();
  if (reader < topo.num_npus()) {
    const uint32_t node = topo.npus[reader].node;
    for (const auto& p : a.parts)
      if (p.npu < topo.num_npus() && topo.npus[p.npu].node == node) return p.addr;
  }
  return a.parts[reader % a.parts.size()].addr;
}

StatusOr<GlobalAddr> GlobalMemory::symmetric_addr(const Allocation& a, dev::NpuId member) const {
  if (a.policy != Policy::kSymmetric) {
    return make_error(StatusCode::kInvalidArgument, "symmetric_addr: the allocation at %s is %s",
                      to_string(a.base).c_str(), policy_name(a.policy));
  }
  if (a.part_on(member) == nullptr) {
    return make_error(StatusCode::kInvalidArgument,
                      "symmetric_addr: npu %u is not in the group of the allocation at %s", member,
                      to_string(a.base).c_str());
  }
  const Layout& l = core_->layout;
  return GlobalAddr(((l.symmetric_first_page + uint64_t{member} * l.symmetric_pages) << page_shift_) +
                    a.symmetric_offset);
}

// ---- data ----

GlobalMemory::ReadGuard::ReadGuard(GlobalMemory& memory)
    : memory_(&memory), cache_(memory.thread_cache()) {
  memory_->caches_->enter_read(cache_);
}

GlobalMemory::ReadGuard::~ReadGuard() { memory_->caches_->exit_read(cache_); }

Status GlobalMemory::synchronize_readers() { return caches_->synchronize(); }

namespace {
template <typename Copy>
Status copy_pages(const GlobalMemory& m, GlobalAddr addr, uint64_t bytes, const char* what,
                  Copy&& copy) {
  for (uint64_t done = 0; done < bytes;) {
    if (m.translate_host(addr + done) == nullptr) {
      return make_error(StatusCode::kInvalidArgument,
                        "%s of %llu bytes at %s: %s (%llu bytes in) is not mapped", what,
                        static_cast<unsigned long long>(bytes), to_string(addr).c_str(),
                        to_string(addr + done).c_str(), static_cast<unsigned long long>(done));
    }
    done += std::min(bytes - done, m.contiguous_bytes(addr + done));
  }
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min(bytes - done, m.contiguous_bytes(addr + done));
    void* host = m.translate_host(addr + done);
    if (host == nullptr) {
      return make_error(StatusCode::kInvalidArgument, "%s at %s: unmapped while copying", what,
                        to_string(addr + done).c_str());
    }
    copy(host, done, n);
    done += n;
  }
  return ok_status();
}
}  // namespace

Status GlobalMemory::write(GlobalAddr dst, const void* src, uint64_t bytes) {
  ReadGuard guard(*this);
  const char* from = static_cast<const char*>(src);
  return copy_pages(*this, dst, bytes, "write",
                    [&](void* host, uint64_t at, uint64_t n) { std::memcpy(host, from + at, n); });
}

Status GlobalMemory::read(GlobalAddr src, void* dst, uint64_t bytes) {
  ReadGuard guard(*this);
  char* to = static_cast<char*>(dst);
  return copy_pages(*this, src, bytes, "read",
                    [&](void* host, uint64_t at, uint64_t n) { std::memcpy(to + at, host, n); });
}

Status GlobalMemory::write_all(const Allocation& a, uint64_t offset, const void* src,
                               uint64_t bytes) {
  if (offset > a.bytes || bytes > a.bytes - offset) {
    return make_error(StatusCode::kOutOfRange,
                      "write_all: [%llu, +%llu) is outside the %llu-byte allocation at %s",
                      static_cast<unsigned long long>(offset), static_cast<unsigned long long>(bytes),
                      static_cast<unsigned long long>(a.bytes), to_string(a.base).c_str());
  }
  if (a.policy == Policy::kSymmetric || a.policy == Policy::kReplicated) {
    for (const auto& p : a.parts) MOE_TRY(write(p.addr + offset, src, bytes));
    return ok_status();
  }
  return write(a.base + offset, src, bytes);
}

}  // namespace moe::mem
