// Best-fit allocation of unit ranges with coalescing: the bookkeeping behind every range of
// global address space (the general space, each NPU's large-block window, the symmetric
// offsets). It manages numbers only; callers decide what a unit is (a page, a grain).
//
// Best fit: the smallest free extent that holds the request at the asked alignment, the
// lowest address among equals; that keeps live ranges packed low and large extents whole,
// which bounds fragmentation. Freed ranges merge with free neighbours at once.
//
// Thread-safety: none; the owner holds a lock. Costs: O(log n) per operation in the number
// of free extents (plus candidates skipped for alignment).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <utility>

namespace moe::mem {

class ExtentAllocator {
 public:
  // Makes [first_unit, first_unit + num_units) one free extent; forgets any previous state.
  void reset(uint64_t first_unit, uint64_t num_units);

  // Takes `units` (> 0) units starting at a multiple of `align_units` (a power of two, >= 1).
  // False (nothing changed) when no free extent holds it.
  bool allocate(uint64_t units, uint64_t align_units, uint64_t* start);
  // Gives back a range obtained from allocate() (or a piece of one). Precondition: every
  // unit of it is allocated.
  void release(uint64_t start, uint64_t units);
  // True when every unit of [start, start + units) is free.
  bool is_free(uint64_t start, uint64_t units) const;

  uint64_t free_units() const { return free_units_; }
  uint64_t largest_free_units() const {
    return by_size_.empty() ? 0 : by_size_.rbegin()->first;
  }
  size_t num_free_extents() const { return by_start_.size(); }
  // Calls f(start, units) for every free extent, lowest address first.
  template <typename F>
  void for_each_free(F&& f) const {
    for (const auto& [start, units] : by_start_) f(start, units);
  }

 private:
  void insert(uint64_t start, uint64_t units);
  void erase(std::map<uint64_t, uint64_t>::iterator it);

  std::map<uint64_t, uint64_t> by_start_;             // start -> units
  std::set<std::pair<uint64_t, uint64_t>> by_size_;   // (units, start)
  uint64_t free_units_ = 0;
};

}  // namespace moe::mem
