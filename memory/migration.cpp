// Page migration: copy, then switch, then wait for readers, then free.
//
// Pages move in batches of up to kBatchPages: frames for the batch are taken on the target
// (all or nothing), each page is copied through the host mappings and its entry switched
// with a compare-exchange from the entry that was copied. A failed exchange means the page
// changed under us (freed, or moved by a concurrent migration): the new frame is returned
// and the page left to whoever changed it (or retried if it still needs moving). After the
// batch, one synchronize() waits until no reader can still hold an old translation, and
// only then are the old frames freed (and poisoned when MEM_POISON_FREED is set, which is
// how the tests prove no reader ever saw a reused frame).
#include <cstring>
#include <vector>

#include "memory/global_memory.h"
#include "memory/mem_core.h"
#include "memory/thread_cache.h"
#include "runtime/base/check.h"
#include "runtime/base/log.h"

namespace moe::mem {
namespace {
constexpr uint64_t kBatchPages = 64;
}

Status GlobalMemory::migrate(GlobalAddr addr, uint64_t bytes, dev::NpuId target,
                             MigrateResult* result) {
  MOE_TRY(check_npu(target, "migrate: target"));
  if (thread_cache()->read_depth > 0) {
    return make_error(StatusCode::kFailedPrecondition,
                      "migrate(%s): called inside a ReadGuard; a migration waits for readers to "
                      "drain, so it must run outside any read section", to_string(addr).c_str());
  }
  if (bytes == 0 || addr.is_null() || addr.value + bytes < addr.value) {
    return make_error(StatusCode::kInvalidArgument, "migrate(%s, %llu bytes): empty or wrapping range",
                      to_string(addr).c_str(), static_cast<unsigned long long>(bytes));
  }
  const uint64_t first = addr.value >> page_shift_;
  const uint64_t last = (addr.value + bytes - 1) >> page_shift_;
  for (uint64_t p = first; p <= last; ++p) {
    if (view_.entry(p) == 0) {
      return make_error(StatusCode::kInvalidArgument,
                        "migrate(%s, %llu bytes): global page %llu (%s) is not mapped; nothing moved",
                        to_string(addr).c_str(), static_cast<unsigned long long>(bytes),
                        static_cast<unsigned long long>(p), to_string(GlobalAddr(p << page_shift_)).c_str());
    }
  }
  MigrateResult local;
  Status s = migrate_pages(first, last, target, &local);
  if (result) *result = local;
  return s;
}

Status GlobalMemory::migrate(const Allocation& a, dev::NpuId target, MigrateResult* result) {
  MigrateResult total;
  Status s;
  if (a.policy == Policy::kSymmetric || a.policy == Policy::kReplicated) {
    for (const auto& p : a.parts) {
      MigrateResult one;
      s = migrate(p.addr, a.bytes, target, &one);
      total.pages_moved += one.pages_moved;
      total.pages_already_there += one.pages_already_there;
      total.bytes_copied += one.bytes_copied;
      if (!s.ok()) break;
    }
  } else {
    s = migrate(a.base, a.bytes, target, &total);
  }
  if (result) *result = total;
  return s;
}

Status GlobalMemory::migrate_pages(uint64_t first, uint64_t last, dev::NpuId target,
                                   MigrateResult* result) {
  MemCore& core = *core_;
  std::vector<uint64_t> todo;
  std::vector<Frame> frames;
  std::vector<uint64_t> retired;
  for (uint64_t batch_first = first; batch_first <= last; batch_first += kBatchPages) {
    const uint64_t batch_last = std::min(last, batch_first + kBatchPages - 1);
    todo.clear();
    for (uint64_t p = batch_first; p <= batch_last; ++p) {
      const uint64_t e = view_.entry(p);
      if (e != 0 && page_entry::npu(e) == target) ++result->pages_already_there;
      else if (e != 0) todo.push_back(p);
    }
    if (todo.empty()) continue;
    frames.clear();
    Status s = core.pools[target]->allocate(todo.size(), &frames);
    if (!s.ok()) {
      return core.out_of_memory(target, todo.size() * page_bytes_, "pages migrating to it", s)
          .with_context(strformat("migrate: %llu pages moved before this batch",
                                  static_cast<unsigned long long>(result->pages_moved)));
    }
    retired.clear();
    for (size_t i = 0; i < todo.size(); ++i) {
      const uint64_t gpn = todo[i];
      const uint64_t fresh = page_entry::make(target, frames[i].slot, frames[i].device_page);
      void* dst = core.host_of(fresh);
      bool placed = false;
      for (int attempt = 0; attempt < 4 && !placed; ++attempt) {
        uint64_t old = view_.entry(gpn);
        if (old == 0 || page_entry::npu(old) == target) break;  // freed, or moved by another
        std::memcpy(dst, core.host_of(old), page_bytes_);
        if (core.table.entry_slot(gpn).compare_exchange_strong(old, fresh, std::memory_order_acq_rel,
                                                               std::memory_order_acquire)) {
          placed = true;
          retired.push_back(old);
          core.counters[page_entry::npu(old)].pages_migrated_out.fetch_add(1, std::memory_order_relaxed);
          core.counters[target].pages_migrated_in.fetch_add(1, std::memory_order_relaxed);
          ++result->pages_moved;
          result->bytes_copied += page_bytes_;
        }
      }
      if (!placed) core.pools[target]->free(frames[i]);
    }
    // Old frames stay untouched until every reader that could have translated to them
    // has left its read section.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    MOE_TRY(caches_->synchronize());  // cannot fail: checked outside a read section above
    for (uint64_t old : retired) core.free_frame_of(old);
  }
  return ok_status();
}

}  // namespace moe::mem
