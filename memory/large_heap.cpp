// Allocation order: reserve grains (best fit), then map frames for every page of the block
// whose count is 0, all or nothing, then raise the counts. Freeing runs it backwards. The
// heap lock is held across the frame-pool calls (lock order: heap, then pool).
#include "memory/large_heap.h"

#include <algorithm>

#include "memory/global_addr.h"
#include "memory/mem_core.h"
#include "runtime/base/check.h"

namespace moe::mem {

LargeHeap::LargeHeap(MemCore& core, dev::NpuId npu, uint64_t first_page, uint64_t pages)
    : core_(core),
      npu_(npu),
      first_page_(first_page),
      pages_(pages),
      grain_shift_(static_cast<uint32_t>(__builtin_ctzll(core.config.large_grain_bytes))),
      grain_bytes_(core.config.large_grain_bytes) {
  const uint32_t grains_per_page_shift = core.page_shift - grain_shift_;
  extents_.reset(first_page << grains_per_page_shift, pages << grains_per_page_shift);
}

Status LargeHeap::allocate(uint64_t bytes, uint64_t alignment, uint64_t* addr) {
  const uint64_t units = (bytes + grain_bytes_ - 1) >> grain_shift_;
  const uint64_t align_units = std::max<uint64_t>(1, alignment >> grain_shift_);
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t start_unit = 0;
  if (!extents_.allocate(units, align_units, &start_unit)) {
    return make_error(StatusCode::kOutOfMemory, "npu %u: the large-block window has no free "
                      "range of %llu grains", npu_, static_cast<unsigned long long>(units));
  }
  const uint64_t start = start_unit << grain_shift_;
  const uint64_t end = (start_unit + units) << grain_shift_;
  const uint64_t first = start >> core_.page_shift;
  const uint64_t last = (end - 1) >> core_.page_shift;
  if (page_refs_.size() < last - first_page_ + 1) page_refs_.resize(last - first_page_ + 1, 0);
  std::vector<uint64_t> fresh;
  for (uint64_t p = first; p <= last; ++p)
    if (page_refs_[p - first_page_] == 0) fresh.push_back(p);
  Status s = core_.map_fresh(fresh.data(), fresh.size(), npu_, make_owner(this, OwnerTag::kLargeHeap));
  if (!s.ok()) {
    extents_.release(start_unit, units);
    return s;
  }
  for (uint64_t p = first; p <= last; ++p) ++page_refs_[p - first_page_];
  mapped_pages_ += fresh.size();
  live_.emplace(start, end - start);
  live_bytes_ += end - start;
  core_.counters[npu_].in_use.add(static_cast<int64_t>(end - start));
  *addr = start;
  return ok_status();
}

Status LargeHeap::free(uint64_t addr) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(addr);
  if (it == live_.end()) {
    auto after = live_.upper_bound(addr);
    if (after != live_.begin()) {
      auto before = std::prev(after);
      if (addr < before->first + before->second) {
        return make_error(StatusCode::kInvalidArgument,
                          "free(%s): not the start of an allocation: it is %llu bytes into the "
                          "large block at %s (%llu bytes) on npu %u",
                          to_string(GlobalAddr(addr)).c_str(),
                          static_cast<unsigned long long>(addr - before->first),
                          to_string(GlobalAddr(before->first)).c_str(),
                          static_cast<unsigned long long>(before->second), npu_);
      }
    }
    return make_error(StatusCode::kInvalidArgument,
                      "free(%s): not allocated: the address is free space of npu %u's large-block "
                      "heap (a double free, or never allocated)",
                      to_string(GlobalAddr(addr)).c_str(), npu_);
  }
  const uint64_t bytes = it->second;
  live_.erase(it);
  live_bytes_ -= bytes;
  const uint64_t first = addr >> core_.page_shift;
  const uint64_t last = (addr + bytes - 1) >> core_.page_shift;
  for (uint64_t p = first; p <= last; ++p) {
    uint32_t& refs = page_refs_[p - first_page_];
    MOE_ASSERT(refs > 0);
    if (--refs == 0) {
      core_.unmap(p);
      --mapped_pages_;
    }
  }
  extents_.release(addr >> grain_shift_, bytes >> grain_shift_);
  core_.counters[npu_].in_use.sub(static_cast<int64_t>(bytes));
  return ok_status();
}

bool LargeHeap::find(uint64_t addr, uint64_t* start, uint64_t* bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto after = live_.upper_bound(addr);
  if (after == live_.begin()) return false;
  auto it = std::prev(after);
  if (addr >= it->first + it->second) return false;
  *start = it->first;
  *bytes = it->second;
  return true;
}

uint64_t LargeHeap::largest_free_bytes(uint64_t available_frames) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t page_bytes = core_.page_bytes;
  uint64_t best = 0;
  extents_.for_each_free([&](uint64_t start_unit, uint64_t units) {
    const uint64_t start = start_unit << grain_shift_;
    const uint64_t end = (start_unit + units) << grain_shift_;
    // Bytes of the extent on pages that are already mapped (at most its first and last
    // page, which it shares with live neighbours) cost no frame.
    uint64_t mapped = 0;
    const uint64_t first = start >> core_.page_shift;
    const uint64_t last = (end - 1) >> core_.page_shift;
    auto is_mapped = [&](uint64_t p) {
      return p - first_page_ < page_refs_.size() && page_refs_[p - first_page_] > 0;
    };
    if (is_mapped(first)) mapped += std::min(end, (first + 1) * page_bytes) - start;
    if (last != first && is_mapped(last)) mapped += end - last * page_bytes;
    const uint64_t reachable = mapped + available_frames * page_bytes;
    best = std::max(best, std::min(end - start, reachable));
  });
  return best;
}

LargeHeapSnapshot LargeHeap::snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  return LargeHeapSnapshot{live_.size(), live_bytes_, mapped_pages_};
}

}  // namespace moe::mem
