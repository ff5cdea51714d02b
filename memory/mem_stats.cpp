// Per-NPU statistics, assembled on demand from the counters the paths keep (gauges updated
// on slow paths only; the fast paths update nothing shared) and from snapshots of the pools
// and heaps. Exported as JSON with the base layer's JsonWriter.
#include "memory/global_memory.h"
#include "memory/large_heap.h"
#include "memory/mem_core.h"
#include "memory/slab_heap.h"
#include "memory/thread_cache.h"
#include "runtime/base/json.h"

namespace moe::mem {

NpuMemStats GlobalMemory::npu_stats(dev::NpuId npu) {
  NpuMemStats s;
  if (npu >= num_npus_) return s;
  MemCore& core = *core_;
  NpuCounters& k = core.counters[npu];
  s.npu = npu;
  s.thread_cached_bytes = caches_->cached_bytes(npu);
  const int64_t handed_out = k.in_use.current();
  s.in_use_bytes = handed_out > int64_t(s.thread_cached_bytes)
                       ? static_cast<uint64_t>(handed_out) - s.thread_cached_bytes
                       : 0;
  s.peak_in_use_bytes = static_cast<uint64_t>(k.in_use.peak());
  core.free_space(npu, &s.free_bytes, &s.largest_free_block_bytes);
  const FramePoolSnapshot pool = core.pools[npu]->snapshot();
  s.limit_bytes = pool.limit_bytes;
  s.committed_bytes = pool.committed_bytes;
  s.segments = pool.segments;
  s.resident_bytes = pool.used_frames * page_bytes_;
  s.slab_pages = static_cast<uint64_t>(k.slab_pages.load(std::memory_order_relaxed));
  const LargeHeapSnapshot large = core.large[npu]->snapshot();
  s.large_blocks = large.live_blocks;
  s.large_mapped_pages = large.mapped_pages;
  s.policy_pages = static_cast<uint64_t>(k.policy_pages.load(std::memory_order_relaxed));
  s.pages_migrated_in = static_cast<uint64_t>(k.pages_migrated_in.load(std::memory_order_relaxed));
  s.pages_migrated_out = static_cast<uint64_t>(k.pages_migrated_out.load(std::memory_order_relaxed));
  return s;
}

std::string GlobalMemory::stats_json(bool touched_only) {
  JsonWriter w;
  w.begin_object();
  w.key("page_bytes").value(page_bytes_);
  w.key("segment_bytes").value(core_->config.segment_bytes);
  w.key("slab_max_bytes").value(slab_max_bytes_);
  w.key("size_classes").value(core_->classes.count());
  w.key("page_table_bytes").value(core_->table.leaf_bytes());
  w.key("npus").begin_array();
  for (dev::NpuId npu = 0; npu < num_npus_; ++npu) {
    const FramePoolSnapshot pool = core_->pools[npu]->snapshot();
    if (touched_only && pool.segments_created == 0) continue;
    const NpuMemStats s = npu_stats(npu);
    w.begin_object();
    w.key("npu").value(s.npu);
    w.key("in_use_bytes").begin_object();
    w.key("current").value(s.in_use_bytes);
    w.key("peak").value(s.peak_in_use_bytes);
    w.key("total").value(core_->counters[npu].in_use.total());
    w.end_object();
    w.key("thread_cached_bytes").value(s.thread_cached_bytes);
    w.key("free_bytes").value(s.free_bytes);
    w.key("largest_free_block_bytes").value(s.largest_free_block_bytes);
    w.key("limit_bytes").value(s.limit_bytes);
    w.key("committed_bytes").value(s.committed_bytes);
    w.key("segments").value(s.segments);
    w.key("segments_created").value(pool.segments_created);
    w.key("segments_released").value(pool.segments_released);
    w.key("resident_bytes").value(s.resident_bytes);
    w.key("slab_pages").value(s.slab_pages);
    w.key("large_blocks").value(s.large_blocks);
    w.key("large_mapped_pages").value(s.large_mapped_pages);
    w.key("policy_pages").value(s.policy_pages);
    w.key("pages_migrated_in").value(s.pages_migrated_in);
    w.key("pages_migrated_out").value(s.pages_migrated_out);
    w.end_object();
  }
  w.end_array();
  w.end_object();
  return w.take();
}

}  // namespace moe::mem
