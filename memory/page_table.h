// The global page table: global page number -> {NPU, segment slot, device page}, plus the
// owner of each page (which allocator handed out its address space).
//
// A two-level radix table. The top level is an array of 2^top_bits leaf pointers; a leaf
// holds 2^leaf_bits entries and as many owner words, is allocated on first use and is
// published with a release store, and lives until the table dies. Lookup: shift, load the
// leaf pointer, load the entry (two dependent loads, no lock). Entries and owners are
// 64-bit atomics: writers change them with single atomic stores or exchanges, so a reader
// sees the old or the new mapping of a page, never a mix.
//
// Entry layout (0 means unmapped):
//   [63:48] npu + 1   [47:32] segment slot (see FramePool)   [31:0] device page number
// so device offset = device_page << page_shift. The slot indexes the per-NPU table of host
// mappings (GlobalMemory::translate_host).
//
// Owner word: a pointer to the allocator object with a 2-bit tag (OwnerTag) in its low bits.
#pragma once

#include <atomic>
#include <cstdint>

#include "runtime/device/topology.h"

namespace moe::mem {

namespace page_entry {
inline constexpr uint32_t kMaxNpus = 0xfffe;
inline constexpr uint32_t kMaxSlots = 0x10000;
inline constexpr uint64_t kMaxDevicePages = uint64_t{1} << 32;
inline constexpr uint64_t make(dev::NpuId npu, uint32_t slot, uint64_t device_page) {
  return (uint64_t{npu + 1} << 48) | (uint64_t{slot} << 32) | device_page;
}
inline constexpr dev::NpuId npu(uint64_t e) { return static_cast<dev::NpuId>(e >> 48) - 1; }
inline constexpr uint32_t slot(uint64_t e) { return static_cast<uint32_t>(e >> 32) & 0xffff; }
inline constexpr uint64_t device_page(uint64_t e) { return e & 0xffffffffu; }
}  // namespace page_entry

enum class OwnerTag : uintptr_t { kNone = 0, kSlab = 1, kLargeHeap = 2, kRecord = 3 };
inline constexpr uintptr_t kOwnerTagMask = 3;
inline OwnerTag owner_tag(uintptr_t owner) { return static_cast<OwnerTag>(owner & kOwnerTagMask); }
template <typename T>
inline T* owner_ptr(uintptr_t owner) { return reinterpret_cast<T*>(owner & ~kOwnerTagMask); }
inline uintptr_t make_owner(const void* p, OwnerTag tag) {
  return reinterpret_cast<uintptr_t>(p) | static_cast<uintptr_t>(tag);
}

class PageTable {
 public:
  // A table over 2^va_bits bytes of global space in pages of 2^page_shift bytes.
  PageTable(uint32_t va_bits, uint32_t page_shift);
  ~PageTable();
  PageTable(const PageTable&) = delete;
  PageTable& operator=(const PageTable&) = delete;

  uint32_t va_bits() const { return va_bits_; }
  uint32_t page_shift() const { return page_shift_; }
  uint64_t num_pages() const { return uint64_t{1} << (va_bits_ - page_shift_); }

  // Raw view for lock-free lookups (also inlined by GlobalMemory's translation).
  struct View {
    std::atomic<std::atomic<uint64_t>*>* top = nullptr;
    uint32_t leaf_bits = 0;
    uint64_t leaf_mask = 0;
    uint64_t leaf_size = 0;
    uint64_t num_pages = 0;

    // The entry of a page; 0 when unmapped or out of range. Wait-free.
    uint64_t entry(uint64_t gpn) const {
      if (gpn >= num_pages) return 0;
      const std::atomic<uint64_t>* leaf = top[gpn >> leaf_bits].load(std::memory_order_acquire);
      return leaf ? leaf[gpn & leaf_mask].load(std::memory_order_acquire) : 0;
    }
    // The owner word of a page; 0 when none. Wait-free.
    uintptr_t owner(uint64_t gpn) const {
      if (gpn >= num_pages) return 0;
      const std::atomic<uint64_t>* leaf = top[gpn >> leaf_bits].load(std::memory_order_acquire);
      return leaf ? static_cast<uintptr_t>(
                        leaf[leaf_size + (gpn & leaf_mask)].load(std::memory_order_acquire))
                  : 0;
    }
  };
  View view() const { return View{top_, leaf_bits_, leaf_mask_, leaf_size_, num_pages()}; }

  uint64_t entry(uint64_t gpn) const { return view().entry(gpn); }
  uintptr_t owner(uint64_t gpn) const { return view().owner(gpn); }

  // Slots of a page for writers; the leaf is created when missing. Precondition:
  // gpn < num_pages(). Never fails (aborts if the host is out of memory).
  std::atomic<uint64_t>& entry_slot(uint64_t gpn);
  std::atomic<uint64_t>& owner_slot(uint64_t gpn);

  // Host memory held by leaves, in bytes.
  uint64_t leaf_bytes() const;

 private:
  std::atomic<uint64_t>* leaf_for(uint64_t gpn);

  uint32_t va_bits_;
  uint32_t page_shift_;
  uint32_t leaf_bits_;
  uint64_t leaf_size_;
  uint64_t leaf_mask_;
  uint64_t top_size_;
  // Each leaf: leaf_size_ entries followed by leaf_size_ owner words.
  std::atomic<std::atomic<uint64_t>*>* top_;
  std::atomic<uint64_t> leaves_{0};
};

}  // namespace moe::mem
