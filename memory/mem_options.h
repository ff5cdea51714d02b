// The memory layer's options table (one per layer; environment override MOE_<NAME>).
//
// Options are read once, when a GlobalMemory is created: MemConfig::from_options() copies
// them into a plain struct, and GlobalMemory::create() takes that struct, so tests and tools
// can build instances with other figures without touching process-wide state.
#pragma once

#include <cstdint>

#include "runtime/base/options.h"
#include "runtime/base/status.h"

namespace moe::mem {

inline const opt::Option<int64_t> kMemPageBytes{
    "memory", "MEM_PAGE_BYTES", int64_t{2} << 20,
    "global page: the unit of mapping and migration (power of two, 4 KiB to 1 GiB)"};
inline const opt::Option<int64_t> kMemSegmentBytes{
    "memory", "MEM_SEGMENT_BYTES", int64_t{64} << 20,
    "HBM reserved and committed from the driver at a time, per NPU (multiple of the page)"};
inline const opt::Option<int64_t> kMemNpuLimitBytes{
    "memory", "MEM_NPU_LIMIT_BYTES", 0,
    "HBM per NPU the memory layer may commit; 0: the NPU's capacity from the topology"};
inline const opt::Option<int64_t> kMemRetainSegments{
    "memory", "MEM_RETAIN_SEGMENTS", 1,
    "fully free segments kept committed per NPU before further ones go back to the driver"};
inline const opt::Option<int64_t> kMemSlabMaxBytes{
    "memory", "MEM_SLAB_MAX_BYTES", int64_t{256} << 10,
    "largest local request served by size-class slabs (at most page/4); larger ones use the "
    "large-block heap"};
inline const opt::Option<int64_t> kMemLargeGrainBytes{
    "memory", "MEM_LARGE_GRAIN_BYTES", int64_t{64} << 10,
    "granule of the large-block heap: large sizes round up to it (power of two, <= page)"};
inline const opt::Option<int64_t> kMemCacheBinBytes{
    "memory", "MEM_CACHE_BIN_BYTES", int64_t{128} << 10,
    "bytes a thread may cache per NPU and size class (the cache holds at most "
    "MEM_CACHE_BIN_BLOCKS blocks and at least one)"};
inline const opt::Option<int64_t> kMemCacheBinBlocks{
    "memory", "MEM_CACHE_BIN_BLOCKS", 64, "blocks a thread may cache per NPU and size class"};
inline const opt::Option<int64_t> kMemSymmetricHeapBytes{
    "memory", "MEM_SYMMETRIC_HEAP_BYTES", int64_t{4} << 30,
    "global address space per NPU for symmetric allocations (the symmetric heap)"};
inline const opt::Option<int64_t> kMemVaBits{
    "memory", "MEM_VA_BITS", 48, "bits of the global address space (40 to 56)"};
inline const opt::Option<bool> kMemPoisonFreed{
    "memory", "MEM_POISON_FREED", false,
    "fill every frame returned to a pool with 0xDB (catches readers of freed or migrated-away "
    "pages; costs a write of the page)"};

// The figures a GlobalMemory is built with. Sizes in bytes.
struct MemConfig {
  uint64_t page_bytes = uint64_t{2} << 20;
  uint64_t segment_bytes = uint64_t{64} << 20;
  uint64_t npu_limit_bytes = 0;  // 0: topology().hbm.capacity_bytes
  uint32_t retain_segments = 1;
  uint64_t slab_max_bytes = uint64_t{256} << 10;
  uint64_t large_grain_bytes = uint64_t{64} << 10;
  uint64_t cache_bin_bytes = uint64_t{128} << 10;
  uint32_t cache_bin_blocks = 64;
  uint64_t symmetric_heap_bytes = uint64_t{4} << 30;
  uint32_t va_bits = 48;
  bool poison_freed = false;

  // The current option values.
  static MemConfig from_options();
  // kInvalidArgument naming the first field out of range.
  Status validate() const;
};

}  // namespace moe::mem
