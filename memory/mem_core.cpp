// Creation computes the layout and sizes every table once; the per-NPU objects (pools,
// heaps) are made eagerly but cost a few hundred bytes each until used. Mapping stores the
// owner before the entry; unmapping clears the owner, then takes the entry with an exchange,
// so exactly one party (an unmap or a migration's compare-exchange) owns each frame.
#include "memory/mem_core.h"

#include <algorithm>
#include <bit>

#include "memory/large_heap.h"
#include "memory/slab_heap.h"
#include "runtime/base/check.h"
#include "runtime/base/log.h"

namespace moe::mem {

MemCore::MemCore(dev::Driver* drv, const MemConfig& cfg, uint32_t npus, uint64_t limit,
                 uint32_t slots)
    : driver(drv),
      config(cfg),
      num_npus(npus),
      page_shift(static_cast<uint32_t>(__builtin_ctzll(cfg.page_bytes))),
      page_bytes(cfg.page_bytes),
      limit_bytes(limit),
      max_slots(slots),
      table(cfg.va_bits, static_cast<uint32_t>(__builtin_ctzll(cfg.page_bytes))),
      classes(cfg.slab_max_bytes, cfg.page_bytes) {}

MemCore::~MemCore() {
  // Heaps first (they only hold metadata), then pools return their segments.
  large.clear();
  slabs.clear();
  pools.clear();
}

StatusOr<std::unique_ptr<MemCore>> MemCore::create(dev::Driver* driver, const MemConfig& config) {
  if (driver == nullptr) return make_error(StatusCode::kInvalidArgument, "memory: no driver");
  MOE_TRY(config.validate());
  const dev::Topology& topo = driver->topology();
  const uint32_t npus = topo.num_npus();
  if (npus == 0 || npus > page_entry::kMaxNpus) {
    return make_error(StatusCode::kUnsupported, "memory: %u NPUs (1 to %u supported)", npus,
                      page_entry::kMaxNpus);
  }
  const uint64_t capacity = topo.hbm.capacity_bytes;
  uint64_t limit = config.npu_limit_bytes ? std::min(config.npu_limit_bytes, capacity) : capacity;
  limit &= ~(config.page_bytes - 1);
  if (limit == 0) {
    return make_error(StatusCode::kInvalidArgument,
                      "memory: HBM capacity %llu bytes per NPU is less than one page (%llu)",
                      static_cast<unsigned long long>(capacity),
                      static_cast<unsigned long long>(config.page_bytes));
  }
  const uint64_t segment = std::min(config.segment_bytes, limit);
  const uint64_t slots = std::min<uint64_t>(page_entry::kMaxSlots, 2 * ((limit + segment - 1) / segment) + 2);

  std::unique_ptr<MemCore> core(
      new MemCore(driver, config, npus, limit, static_cast<uint32_t>(slots)));
  Layout& l = core->layout;
  const uint64_t page = config.page_bytes;
  l.total_pages = core->table.num_pages();
  // Symmetric windows are a power of two of pages and start at a multiple of it, so an
  // offset aligned in the window is aligned in the global space too.
  l.symmetric_pages = std::bit_ceil(std::max<uint64_t>(1, (config.symmetric_heap_bytes + page - 1) / page));
  l.large_pages = 2 * (limit / page);
  l.symmetric_first_page = l.symmetric_pages;
  l.large_first_page = l.symmetric_first_page + uint64_t{npus} * l.symmetric_pages;
  l.general_first_page = l.large_first_page + uint64_t{npus} * l.large_pages;
  const uint64_t general_min = uint64_t{npus} * (limit / page);  // every frame of every NPU
  if (l.general_first_page + general_min > l.total_pages) {
    return make_error(StatusCode::kInvalidArgument,
                      "memory config: va_bits (MEM_VA_BITS) = %u gives %llu pages of %llu bytes, "
                      "too few for %u NPUs x (%llu symmetric + %llu large-window + %llu general) "
                      "pages; raise MEM_VA_BITS or lower MEM_SYMMETRIC_HEAP_BYTES",
                      config.va_bits, static_cast<unsigned long long>(l.total_pages),
                      static_cast<unsigned long long>(page), npus,
                      static_cast<unsigned long long>(l.symmetric_pages),
                      static_cast<unsigned long long>(l.large_pages),
                      static_cast<unsigned long long>(limit / page));
  }
  l.general_pages = l.total_pages - l.general_first_page;
  core->general_.reset(l.general_first_page, l.general_pages);

  core->host_delta.reset(static_cast<std::atomic<intptr_t>*>(
      std::calloc(uint64_t{npus} * slots, sizeof(std::atomic<intptr_t>))));
  if (!core->host_delta) {
    return make_error(StatusCode::kOutOfMemory, "memory: host memory for %u x %llu segment slots",
                      npus, static_cast<unsigned long long>(slots));
  }
  core->counters.reset(new NpuCounters[npus]);
  FramePoolConfig pc;
  pc.page_shift = core->page_shift;
  pc.segment_bytes = segment;
  pc.limit_bytes = limit;
  pc.retain_segments = config.retain_segments;
  pc.max_slots = static_cast<uint32_t>(slots);
  pc.poison_freed = config.poison_freed;
  core->pools.reserve(npus);
  core->slabs.reserve(npus);
  core->large.reserve(npus);
  for (uint32_t n = 0; n < npus; ++n) {
    core->pools.push_back(
        std::make_unique<FramePool>(driver, n, pc, &core->host_delta[uint64_t{n} * slots]));
    core->slabs.push_back(std::make_unique<SlabHeap>(*core, n));
    core->large.push_back(std::make_unique<LargeHeap>(
        *core, n, l.large_first_page + uint64_t{n} * l.large_pages, l.large_pages));
  }
  MOE_DEBUG("memory: %u NPUs, page %llu, segment %llu, limit %llu per NPU, %llu slab classes",
            npus, static_cast<unsigned long long>(page), static_cast<unsigned long long>(segment),
            static_cast<unsigned long long>(limit), static_cast<unsigned long long>(core->classes.count()));
  return core;
}

Status MemCore::map_fresh(const uint64_t* gpns, size_t count, dev::NpuId npu, uintptr_t owner) {
  if (count == 0) return ok_status();
  std::vector<Frame> frames;
  MOE_TRY(pools[npu]->allocate(count, &frames));
  for (size_t i = 0; i < count; ++i) {
    table.owner_slot(gpns[i]).store(owner, std::memory_order_release);
    const uint64_t old = table.entry_slot(gpns[i]).exchange(
        page_entry::make(npu, frames[i].slot, frames[i].device_page), std::memory_order_acq_rel);
    MOE_ASSERT(old == 0);
  }
  return ok_status();
}

void MemCore::unmap(uint64_t gpn) {
  table.owner_slot(gpn).store(0, std::memory_order_release);
  const uint64_t old = table.entry_slot(gpn).exchange(0, std::memory_order_acq_rel);
  if (old != 0) free_frame_of(old);
}

Status MemCore::reserve_general(uint64_t pages, uint64_t align_pages, uint64_t* first_gpn) {
  std::lock_guard<std::mutex> lock(general_mu_);
  if (!general_.allocate(pages, align_pages, first_gpn)) {
    return make_error(StatusCode::kResourceExhausted,
                      "memory: the general global space has no free range of %llu pages "
                      "(%llu pages free, largest %llu)",
                      static_cast<unsigned long long>(pages),
                      static_cast<unsigned long long>(general_.free_units()),
                      static_cast<unsigned long long>(general_.largest_free_units()));
  }
  return ok_status();
}

void MemCore::release_general(uint64_t first_gpn, uint64_t pages) {
  std::lock_guard<std::mutex> lock(general_mu_);
  general_.release(first_gpn, pages);
}

void MemCore::free_space(dev::NpuId npu, uint64_t* free_bytes, uint64_t* largest_free_bytes) {
  const uint64_t frames = pools[npu]->available_frames();
  const LargeHeapSnapshot ls = large[npu]->snapshot();
  const int64_t slab_free = counters[npu].slab_free_bytes.load(std::memory_order_relaxed);
  const uint64_t large_free_mapped =
      ls.mapped_pages * page_bytes > ls.live_bytes ? ls.mapped_pages * page_bytes - ls.live_bytes : 0;
  *free_bytes = frames * page_bytes + static_cast<uint64_t>(std::max<int64_t>(0, slab_free)) +
                large_free_mapped;
  *largest_free_bytes = large[npu]->largest_free_bytes(frames);
}

Status MemCore::out_of_memory(dev::NpuId npu, uint64_t asked_bytes, const char* what,
                              const Status& cause) {
  if (cause.code() != StatusCode::kOutOfMemory) {
    Status s = cause;
    return s.with_context(strformat("npu %u: allocating %llu bytes for %s", npu,
                                    static_cast<unsigned long long>(asked_bytes), what));
  }
  uint64_t free_bytes = 0, largest = 0;
  free_space(npu, &free_bytes, &largest);
  return make_error(StatusCode::kOutOfMemory,
                    "npu %u: out of memory: asked %llu bytes (%s) for %s; free %llu bytes (%s), "
                    "largest free block %llu bytes (%s); %s",
                    npu, static_cast<unsigned long long>(asked_bytes),
                    format_bytes(double(asked_bytes)).c_str(), what,
                    static_cast<unsigned long long>(free_bytes),
                    format_bytes(double(free_bytes)).c_str(),
                    static_cast<unsigned long long>(largest), format_bytes(double(largest)).c_str(),
                    cause.message().c_str());
}

}  // namespace moe::mem
