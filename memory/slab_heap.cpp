// Block states: a block is 1 only while a caller owns it. Blocks in a slab's free stack, in
// the never-used tail or in a thread cache are 0. The free fast path flips 1 -> 0 with one
// atomic exchange, which is what catches a double free; this file only moves blocks whose
// state is already 0.
//
// Invariant per slab: outside + free_stack.size() + (blocks_per_slab - bump) ==
// blocks_per_slab; bucket == -1 exactly when outside == blocks_per_slab (full) or parked,
// else bucket == outside * kOccupancyBuckets / blocks_per_slab.
#include "memory/slab_heap.h"

#include "memory/mem_core.h"
#include "runtime/base/check.h"

namespace moe::mem {

SlabHeap::SlabHeap(MemCore& core, dev::NpuId npu)
    : core_(core), npu_(npu), bins_(new Bin[core.classes.count()]) {}

SlabHeap::~SlabHeap() = default;  // pages go with the page table and pools

void SlabHeap::list_remove(Bin& bin, Slab* s) {
  const int32_t b = s->bucket;
  MOE_ASSERT(b >= 0);
  if (s->prev) s->prev->next = s->next;
  else bin.head[b] = s->next;
  if (s->next) s->next->prev = s->prev;
  else bin.tail[b] = s->prev;
  s->prev = s->next = nullptr;
  s->bucket = -1;
}

void SlabHeap::relist(Bin& bin, Slab* s) {
  const int32_t want = s->outside < s->blocks
                           ? static_cast<int32_t>(uint64_t{s->outside} * kOccupancyBuckets / s->blocks)
                           : -1;
  if (want == s->bucket) return;
  if (s->bucket >= 0) list_remove(bin, s);
  if (want < 0) return;
  s->prev = bin.tail[want];
  s->next = nullptr;
  if (bin.tail[want]) bin.tail[want]->next = s;
  else bin.head[want] = s;
  bin.tail[want] = s;
  s->bucket = want;
}

Status SlabHeap::new_slab_locked(Bin& bin, uint32_t c, Slab** out) {
  uint64_t gpn = 0;
  MOE_TRY(core_.reserve_general(1, 1, &gpn));
  Slab* slab;
  const bool from_parked = !bin.parked.empty();
  if (from_parked) {
    slab = bin.parked.back();
  } else {
    auto fresh = std::make_unique<Slab>();
    const SizeClass& sc = core_.classes.at(c);
    fresh->class_index = c;
    fresh->npu = npu_;
    fresh->size_class = &sc;
    fresh->magic = sc.magic;
    fresh->block_bytes = sc.bytes;
    fresh->blocks = sc.blocks_per_slab;
    fresh->use_magic = sc.use_magic;
    fresh->bin_index = npu_ * core_.classes.count() + c;
    fresh->state_owned.reset(new std::atomic<uint8_t>[sc.blocks_per_slab + 1]);
    fresh->state = fresh->state_owned.get();
    fresh->free_stack.reserve(sc.blocks_per_slab);
    slab = fresh.get();
    std::lock_guard<std::mutex> lock(owned_mu_);
    owned_.push_back(std::move(fresh));
  }
  // Set the slab up before its page is published (the owner word makes it findable).
  const uint32_t blocks = slab->size_class->blocks_per_slab;
  for (uint32_t i = 0; i <= blocks; ++i) slab->state[i].store(0, std::memory_order_relaxed);
  slab->base = gpn << core_.page_shift;
  slab->free_stack.clear();
  slab->bump = 0;
  slab->outside = 0;
  Status s = core_.map_fresh(&gpn, 1, npu_, make_owner(slab, OwnerTag::kSlab));
  if (!s.ok()) {
    slab->base = 0;
    if (!from_parked) bin.parked.push_back(slab);  // kept for the next attempt
    core_.release_general(gpn, 1);
    return s;
  }
  if (from_parked) bin.parked.pop_back();
  ++bin.slabs;
  relist(bin, slab);
  NpuCounters& k = core_.counters[npu_];
  k.slab_pages.fetch_add(1, std::memory_order_relaxed);
  k.slab_free_bytes.fetch_add(int64_t{blocks} * slab->size_class->bytes,
                              std::memory_order_relaxed);
  *out = slab;
  return ok_status();
}

void SlabHeap::release_slab_locked(Bin& bin, Slab* slab) {
  MOE_ASSERT(slab->outside == 0);
  if (slab->bucket >= 0) list_remove(bin, slab);
  const uint64_t gpn = slab->base >> core_.page_shift;
  core_.unmap(gpn);
  core_.release_general(gpn, 1);
  NpuCounters& k = core_.counters[npu_];
  k.slab_pages.fetch_sub(1, std::memory_order_relaxed);
  k.slab_free_bytes.fetch_sub(int64_t{slab->size_class->blocks_per_slab} * slab->size_class->bytes,
                              std::memory_order_relaxed);
  slab->base = 0;
  --bin.slabs;
  bin.parked.push_back(slab);
}

Status SlabHeap::take(uint32_t c, uint32_t want, CachedBlock* out, uint32_t* got) {
  Bin& bin = bins_[c];
  std::lock_guard<std::mutex> lock(bin.mu);
  uint32_t n = 0;
  while (n < want) {
    Slab* slab = nullptr;
    for (int32_t b = kOccupancyBuckets - 1; b >= 0 && !slab; --b) slab = bin.head[b];
    if (!slab) {
      if (n > 0) break;  // enough for now; a new slab only when nothing was found
      MOE_TRY(new_slab_locked(bin, c, &slab));
    }
    const uint32_t size = slab->size_class->bytes;
    const uint32_t blocks = slab->size_class->blocks_per_slab;
    while (n < want) {
      uint32_t index;
      if (!slab->free_stack.empty()) {
        index = slab->free_stack.back();
        slab->free_stack.pop_back();
      } else if (slab->bump < blocks) {
        index = slab->bump++;
      } else {
        break;
      }
      out[n++] = CachedBlock{slab->base + uint64_t{index} * size, &slab->state[index]};
      ++slab->outside;
    }
    relist(bin, slab);
  }
  const int64_t bytes = int64_t{n} * core_.classes.at(c).bytes;
  NpuCounters& k = core_.counters[npu_];
  k.in_use.add(bytes);
  k.slab_free_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  *got = n;
  return ok_status();
}

void SlabHeap::give_back(uint32_t c, const CachedBlock* blocks, uint32_t n) {
  Bin& bin = bins_[c];
  std::lock_guard<std::mutex> lock(bin.mu);
  const SizeClass& sc = core_.classes.at(c);
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t addr = blocks[i].addr;
    Slab* slab = owner_ptr<Slab>(core_.table.owner(addr >> core_.page_shift));
    MOE_ASSERT(slab != nullptr && slab->class_index == c && slab->npu == npu_);
    const uint32_t index = static_cast<uint32_t>(core_.classes.block_index(sc, addr - slab->base));
    MOE_ASSERT_EXPENSIVE(blocks[i].state == &slab->state[index]);
    slab->free_stack.push_back(index);
    MOE_ASSERT(slab->outside > 0);
    --slab->outside;
    if (slab->outside == 0 && bin.slabs > 1) release_slab_locked(bin, slab);
    else relist(bin, slab);
  }
  const int64_t bytes = int64_t{n} * sc.bytes;
  NpuCounters& k = core_.counters[npu_];
  k.in_use.sub(bytes);
  k.slab_free_bytes.fetch_add(bytes, std::memory_order_relaxed);
}

SlabHeapSnapshot SlabHeap::snapshot() {
  SlabHeapSnapshot s;
  s.slabs = static_cast<uint64_t>(core_.counters[npu_].slab_pages.load(std::memory_order_relaxed));
  s.free_block_bytes =
      static_cast<uint64_t>(core_.counters[npu_].slab_free_bytes.load(std::memory_order_relaxed));
  return s;
}

}  // namespace moe::mem
