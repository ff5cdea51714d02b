// Leaves come from calloc: a leaf covering 2^leaf_bits pages costs host memory only for the
// parts the OS actually backs (large callocs are fresh zero pages), and all-zero bytes are a
// valid std::atomic<uint64_t> holding 0 (the type is lock-free and has no padding). Two
// threads creating the same leaf race with a compare-exchange; the loser frees its copy.
// The split between levels: leaf_bits = ceil(index_bits / 2), so with 48-bit space and
// 2 MiB pages a leaf covers 32 GiB (256 KiB of host memory) and the top is 64 KiB.
#include "memory/page_table.h"

#include <cstdlib>

#include "runtime/base/check.h"

namespace moe::mem {

static_assert(sizeof(std::atomic<uint64_t>) == 8 && std::atomic<uint64_t>::is_always_lock_free);

PageTable::PageTable(uint32_t va_bits, uint32_t page_shift)
    : va_bits_(va_bits), page_shift_(page_shift) {
  MOE_ASSERT(va_bits > page_shift);
  const uint32_t index_bits = va_bits - page_shift;
  leaf_bits_ = (index_bits + 1) / 2;
  leaf_size_ = uint64_t{1} << leaf_bits_;
  leaf_mask_ = leaf_size_ - 1;
  top_size_ = uint64_t{1} << (index_bits - leaf_bits_);
  top_ = static_cast<std::atomic<std::atomic<uint64_t>*>*>(
      std::calloc(top_size_, sizeof(std::atomic<std::atomic<uint64_t>*>)));
  MOE_ASSERT(top_ != nullptr);
}

PageTable::~PageTable() {
  for (uint64_t i = 0; i < top_size_; ++i) std::free(top_[i].load(std::memory_order_relaxed));
  std::free(top_);
}

std::atomic<uint64_t>* PageTable::leaf_for(uint64_t gpn) {
  MOE_ASSERT(gpn < num_pages());
  auto& slot = top_[gpn >> leaf_bits_];
  std::atomic<uint64_t>* leaf = slot.load(std::memory_order_acquire);
  if (leaf) return leaf;
  auto* fresh =
      static_cast<std::atomic<uint64_t>*>(std::calloc(2 * leaf_size_, sizeof(uint64_t)));
  MOE_ASSERT(fresh != nullptr);
  if (slot.compare_exchange_strong(leaf, fresh, std::memory_order_acq_rel,
                                   std::memory_order_acquire)) {
    leaves_.fetch_add(1, std::memory_order_relaxed);
    return fresh;
  }
  std::free(fresh);
  return leaf;
}

std::atomic<uint64_t>& PageTable::entry_slot(uint64_t gpn) {
  return leaf_for(gpn)[gpn & leaf_mask_];
}

std::atomic<uint64_t>& PageTable::owner_slot(uint64_t gpn) {
  return leaf_for(gpn)[leaf_size_ + (gpn & leaf_mask_)];
}

uint64_t PageTable::leaf_bytes() const {
  return leaves_.load(std::memory_order_relaxed) * 2 * leaf_size_ * sizeof(uint64_t);
}

}  // namespace moe::mem
