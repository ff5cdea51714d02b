// A set of host processing units (PUs, hardware threads), named by their OS index: the
// number the kernel uses (what `taskset -c` takes and /proc/cpuinfo calls "processor").
//
// Plain data, no hwloc: the placement plan, the topology summary and the binding calls all
// speak in CpuSets, so a plan can be computed, compared and printed without a topology.
// Invariant: pus() is sorted ascending without duplicates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::rt::host {

class CpuSet {
 public:
  CpuSet() = default;
  // Sorts and removes duplicates.
  explicit CpuSet(std::vector<uint32_t> pus);

  const std::vector<uint32_t>& pus() const { return pus_; }
  bool empty() const { return pus_.empty(); }
  size_t size() const { return pus_.size(); }
  bool contains(uint32_t pu) const;
  // True when every PU of this set is in `other` (the empty set is a subset of anything).
  bool is_subset_of(const CpuSet& other) const;
  // Compact ranges: "0-3,8,10-11"; "none" for the empty set.
  std::string to_string() const;

  bool operator==(const CpuSet&) const = default;

 private:
  std::vector<uint32_t> pus_;
};

// Formats ids as compact ranges, in the given order: {0,1,2,5} -> "0-2,5"; {} -> "none".
std::string format_id_ranges(const std::vector<uint32_t>& ids);

}  // namespace moe::rt::host
