// Two ordered indexes over the same free extents: by start (to find and merge neighbours)
// and by (size, start) (to find the best fit). Invariant: free extents never touch; two
// adjacent ones are always merged into one.
#include "memory/extent_allocator.h"

#include "runtime/base/check.h"

namespace moe::mem {

void ExtentAllocator::reset(uint64_t first_unit, uint64_t num_units) {
  by_start_.clear();
  by_size_.clear();
  free_units_ = 0;
  if (num_units > 0) insert(first_unit, num_units);
}

void ExtentAllocator::insert(uint64_t start, uint64_t units) {
  by_start_.emplace(start, units);
  by_size_.emplace(units, start);
  free_units_ += units;
}

void ExtentAllocator::erase(std::map<uint64_t, uint64_t>::iterator it) {
  by_size_.erase({it->second, it->first});
  free_units_ -= it->second;
  by_start_.erase(it);
}

bool ExtentAllocator::allocate(uint64_t units, uint64_t align_units, uint64_t* start) {
  if (units == 0 || align_units == 0 || (align_units & (align_units - 1)) != 0) return false;
  for (auto it = by_size_.lower_bound({units, 0}); it != by_size_.end(); ++it) {
    const uint64_t ext_units = it->first;
    const uint64_t ext_start = it->second;
    const uint64_t aligned = (ext_start + align_units - 1) & ~(align_units - 1);
    if (aligned < ext_start || aligned - ext_start + units > ext_units) continue;
    erase(by_start_.find(ext_start));
    if (aligned > ext_start) insert(ext_start, aligned - ext_start);
    const uint64_t end = ext_start + ext_units;
    if (aligned + units < end) insert(aligned + units, end - (aligned + units));
    *start = aligned;
    return true;
  }
  return false;
}

void ExtentAllocator::release(uint64_t start, uint64_t units) {
  MOE_ASSERT(units > 0);
  uint64_t new_start = start;
  uint64_t new_units = units;
  auto next = by_start_.lower_bound(start);
  MOE_ASSERT(next == by_start_.end() || next->first >= start + units);
  if (next != by_start_.begin()) {
    auto prev = std::prev(next);
    MOE_ASSERT(prev->first + prev->second <= start);
    if (prev->first + prev->second == start) {
      new_start = prev->first;
      new_units += prev->second;
      erase(prev);
    }
  }
  next = by_start_.lower_bound(start + units);
  if (next != by_start_.end() && next->first == start + units) {
    new_units += next->second;
    erase(next);
  }
  insert(new_start, new_units);
}

bool ExtentAllocator::is_free(uint64_t start, uint64_t units) const {
  auto it = by_start_.upper_bound(start);
  if (it == by_start_.begin()) return false;
  --it;
  return it->first <= start && start + units <= it->first + it->second;
}

}  // namespace moe::mem
