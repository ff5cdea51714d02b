// MemConfig from the options table, and its validation (the config is checked once, at
// GlobalMemory::create, so the data paths need not check it again).
#include "memory/mem_options.h"

namespace moe::mem {
namespace {
bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }
}  // namespace

MemConfig MemConfig::from_options() {
  MemConfig c;
  c.page_bytes = static_cast<uint64_t>(kMemPageBytes.get());
  c.segment_bytes = static_cast<uint64_t>(kMemSegmentBytes.get());
  c.npu_limit_bytes = static_cast<uint64_t>(kMemNpuLimitBytes.get());
  c.retain_segments = static_cast<uint32_t>(kMemRetainSegments.get());
  c.slab_max_bytes = static_cast<uint64_t>(kMemSlabMaxBytes.get());
  c.large_grain_bytes = static_cast<uint64_t>(kMemLargeGrainBytes.get());
  c.cache_bin_bytes = static_cast<uint64_t>(kMemCacheBinBytes.get());
  c.cache_bin_blocks = static_cast<uint32_t>(kMemCacheBinBlocks.get());
  c.symmetric_heap_bytes = static_cast<uint64_t>(kMemSymmetricHeapBytes.get());
  c.va_bits = static_cast<uint32_t>(kMemVaBits.get());
  c.poison_freed = kMemPoisonFreed.get();
  return c;
}

Status MemConfig::validate() const {
  auto bad = [](const char* field, uint64_t value, const char* rule) {
    return make_error(StatusCode::kInvalidArgument, "memory config: %s = %llu: %s", field,
                      static_cast<unsigned long long>(value), rule);
  };
  if (!is_pow2(page_bytes) || page_bytes < 4096 || page_bytes > (uint64_t{1} << 30))
    return bad("page_bytes (MEM_PAGE_BYTES)", page_bytes, "must be a power of two, 4 KiB to 1 GiB");
  if (segment_bytes == 0 || segment_bytes % page_bytes != 0)
    return bad("segment_bytes (MEM_SEGMENT_BYTES)", segment_bytes,
               "must be a positive multiple of the page");
  if (npu_limit_bytes != 0 && npu_limit_bytes < page_bytes)
    return bad("npu_limit_bytes (MEM_NPU_LIMIT_BYTES)", npu_limit_bytes,
               "must be 0 (the capacity) or at least one page");
  if (slab_max_bytes < 16 || slab_max_bytes > page_bytes / 4)
    return bad("slab_max_bytes (MEM_SLAB_MAX_BYTES)", slab_max_bytes,
               "must be 16 bytes to a quarter of the page");
  if (!is_pow2(large_grain_bytes) || large_grain_bytes < 4096 || large_grain_bytes > page_bytes)
    return bad("large_grain_bytes (MEM_LARGE_GRAIN_BYTES)", large_grain_bytes,
               "must be a power of two, 4 KiB to the page");
  if (cache_bin_blocks == 0 || cache_bin_blocks > 4096)
    return bad("cache_bin_blocks (MEM_CACHE_BIN_BLOCKS)", cache_bin_blocks, "must be 1 to 4096");
  if (va_bits < 40 || va_bits > 56) return bad("va_bits (MEM_VA_BITS)", va_bits, "must be 40 to 56");
  return ok_status();
}

}  // namespace moe::mem
