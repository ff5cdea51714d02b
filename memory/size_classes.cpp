// Exactness of the multiply-shift division: with m = ceil(2^44 / d) = (2^44 + e) / d,
// 0 <= e < d, (n * m) >> 44 = floor(n / d + n * e / (d * 2^44)), which equals floor(n / d)
// whenever n * e < 2^44, i.e. when n * d < 2^44: offsets below 2^22 and sizes below 2^21
// (the slab limit is at most page / 4, so pages up to 4 MiB qualify). n * m stays below
// 2^22 * 2^40 = 2^62, so the product never overflows.
#include "memory/size_classes.h"

#include "runtime/base/check.h"

namespace moe::mem {

SizeClasses::SizeClasses(uint64_t max_bytes, uint64_t page_bytes) {
  for (uint32_t i = 0; i < kMaxSizeClasses; ++i) {
    uint64_t bytes;
    if (i < 8) {
      bytes = 16 * (i + 1);
    } else {
      const uint32_t w = 7 + (i - 8) / 4;
      bytes = uint64_t{(i - 8) % 4 + 5} << (w - 2);
    }
    if (bytes > max_bytes) break;
    SizeClass& c = classes_[i];
    c.bytes = static_cast<uint32_t>(bytes);
    c.alignment = static_cast<uint32_t>(bytes & (~bytes + 1));
    c.blocks_per_slab = static_cast<uint32_t>(page_bytes / bytes);
    c.use_magic = page_bytes <= (uint64_t{1} << 22) && bytes < (uint64_t{1} << 21);
    c.magic = c.use_magic ? ((uint64_t{1} << 44) + bytes - 1) / bytes : 0;
    max_bytes_ = bytes;
    count_ = i + 1;
  }
  MOE_ASSERT(count_ > 0);
  // The last class must end the table exactly at the limit's class: index_of() maps every
  // size up to max_bytes_ to an existing class.
  MOE_ASSERT(index_of(max_bytes_) == count_ - 1);
}

uint32_t SizeClasses::index_of(uint64_t bytes, uint64_t alignment) const {
  if (bytes == 0 || bytes > max_bytes_) return count_;
  for (uint32_t i = index_of(bytes); i < count_; ++i)
    if (classes_[i].alignment >= alignment) return i;
  return count_;
}

}  // namespace moe::mem
