// Internal to runtime/host/*.cpp: the few conversions between hwloc bitmaps and our plain
// data. The only header besides the .cpp files that includes <hwloc.h>; never include it
// from another header.
#pragma once

#include <hwloc.h>

#include <memory>

#include "runtime/host/cpu_set.h"

namespace moe::rt::host::detail {

struct BitmapFree {
  void operator()(hwloc_bitmap_s* b) const { hwloc_bitmap_free(b); }
};
// An owned hwloc bitmap; null only when allocation failed.
using Bitmap = std::unique_ptr<hwloc_bitmap_s, BitmapFree>;

inline Bitmap make_bitmap() { return Bitmap(hwloc_bitmap_alloc()); }

// The set's indexes as a CpuSet (for a cpuset: PU OS indexes). A null or infinite bitmap
// gives the empty set (hwloc uses infinite sets only for "everything", never in a cpuset
// of an object).
inline CpuSet cpuset_from_bitmap(hwloc_const_bitmap_t bitmap) {
  std::vector<uint32_t> pus;
  if (bitmap == nullptr || hwloc_bitmap_weight(bitmap) < 0) return CpuSet();
  for (int i = hwloc_bitmap_first(bitmap); i >= 0; i = hwloc_bitmap_next(bitmap, i))
    pus.push_back(static_cast<uint32_t>(i));
  return CpuSet(std::move(pus));
}

// A bitmap with the set's indexes; null when allocation failed.
inline Bitmap bitmap_from_cpuset(const CpuSet& set) {
  Bitmap b = make_bitmap();
  if (!b) return b;
  for (uint32_t pu : set.pus()) hwloc_bitmap_set(b.get(), pu);
  return b;
}

}  // namespace moe::rt::host::detail
