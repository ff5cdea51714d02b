// Size classes of the slab path: 16-byte steps up to 128 B, then four classes per doubling
// (160, 192, 224, 256, 320, ...), up to MEM_SLAB_MAX_BYTES. Worst-case internal waste is
// under 25% (under 12.5% on average for uniform sizes).
//
// A block of class c starts at slab_base + i * size(c) and slab bases are page aligned, so
// a class's natural alignment is the largest power of two dividing its size; a request with
// a larger alignment moves up to the first class whose size it divides (each doubling ends
// in a power of two, so one always exists below the slab limit or the request goes to the
// large path).
//
// block_index() divides by the class size with a multiply and a shift (exact for offsets
// below 2^22 and sizes below 2^21, checked when the table is built); larger pages use a
// hardware division.
#pragma once

#include <cstdint>
#include <vector>

namespace moe::mem {

inline constexpr uint32_t kMaxSizeClasses = 72;

struct SizeClass {
  uint32_t bytes = 0;
  uint32_t alignment = 0;     // largest power of two dividing bytes
  uint32_t blocks_per_slab = 0;
  uint64_t magic = 0;         // ceil(2^44 / bytes) when use_magic
  bool use_magic = false;
};

class SizeClasses {
 public:
  // Classes up to max_bytes (<= page_bytes / 4) for slabs of one page.
  SizeClasses(uint64_t max_bytes, uint64_t page_bytes);

  uint32_t count() const { return count_; }
  uint64_t max_bytes() const { return max_bytes_; }
  const SizeClass& at(uint32_t index) const { return classes_[index]; }

  // The class for `bytes` (1..max_bytes) with the default 16-byte alignment.
  uint32_t index_of(uint64_t bytes) const {
    if (bytes <= 128) return static_cast<uint32_t>((bytes + 15) / 16) - 1;
    const uint64_t m = bytes - 1;
    const uint32_t w = 63 - static_cast<uint32_t>(__builtin_clzll(m));  // >= 7
    return 8 + (w - 7) * 4 + static_cast<uint32_t>(m >> (w - 2)) - 4;
  }
  // The class for `bytes` at `alignment` (a power of two); count() when none fits.
  uint32_t index_of(uint64_t bytes, uint64_t alignment) const;

  // Index of the block at `offset` bytes into a slab of class c; exact.
  uint64_t block_index(const SizeClass& c, uint64_t offset) const {
    return c.use_magic ? (offset * c.magic) >> 44 : offset / c.bytes;
  }

 private:
  uint32_t count_ = 0;
  uint64_t max_bytes_ = 0;
  SizeClass classes_[kMaxSizeClasses];
};

}  // namespace moe::mem
