// CpuSet: a sorted vector is enough; sets here hold one core's PUs or one NUMA node's.
#include "runtime/host/cpu_set.h"

#include <algorithm>

#include "runtime/base/strformat.h"

namespace moe::rt::host {

CpuSet::CpuSet(std::vector<uint32_t> pus) : pus_(std::move(pus)) {
  std::sort(pus_.begin(), pus_.end());
  pus_.erase(std::unique(pus_.begin(), pus_.end()), pus_.end());
}

bool CpuSet::contains(uint32_t pu) const {
  return std::binary_search(pus_.begin(), pus_.end(), pu);
}

bool CpuSet::is_subset_of(const CpuSet& other) const {
  return std::includes(other.pus_.begin(), other.pus_.end(), pus_.begin(), pus_.end());
}

std::string CpuSet::to_string() const { return format_id_ranges(pus_); }

std::string format_id_ranges(const std::vector<uint32_t>& ids) {
  if (ids.empty()) return "none";
  std::string out;
  size_t i = 0;
  while (i < ids.size()) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? strformat("%u", ids[i]) : strformat("%u-%u", ids[i], ids[j]);
    i = j + 1;
  }
  return out;
}

}  // namespace moe::rt::host
