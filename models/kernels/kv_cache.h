// The KV cache as the attention kernels see it: one sequence, one layer, positions grouped in
// blocks.
//
// A KvCacheView names where position `pos` of a sequence lives: block pos / block_positions,
// row pos % block_positions inside it. A row holds one position's entry for every KV head:
// [kv_head][head_dim] elements, row_elems() in all, rows contiguous inside a block. A
// contiguous cache is one block of `capacity` positions (ContiguousKvCache); a paged cache
// (the serving issue) hands the same view a table of fixed-size blocks, and the kernels do not
// change. K and V have separate blocks of the same shape.
//
// Element types: FP32 or BF16 (uint16_t; converted on load, rounded to nearest-even on
// store). BF16 halves the cache at the cost of rounding K and V to 8 significant bits.
//
// `length` is the number of positions filled. The attention kernels append new tokens at
// positions [length, length + n) and advance it; a caller that discards tokens (rejected
// speculative tokens) lowers it, and the next append overwrites them.
//
// Ownership: the view does not own the blocks. Thread-safety: one writer per sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/base/status.h"

namespace moe::models::kernels {

enum class KvDtype : uint8_t { kFloat32 = 0, kBf16 = 1 };
inline uint32_t kv_dtype_bytes(KvDtype d) { return d == KvDtype::kFloat32 ? 4 : 2; }

struct KvCacheView {
  KvDtype dtype = KvDtype::kFloat32;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t block_positions = 0;  // positions per block
  uint32_t num_blocks = 0;
  void* const* k_blocks = nullptr;  // num_blocks pointers, each block_positions rows
  void* const* v_blocks = nullptr;
  uint32_t length = 0;              // positions filled, <= capacity()

  uint32_t capacity() const { return block_positions * num_blocks; }
  size_t row_elems() const { return size_t{num_kv_heads} * head_dim; }
  size_t row_bytes() const { return row_elems() * kv_dtype_bytes(dtype); }
  // The block holding position pos (precondition: pos < capacity()).
  uint32_t block_of(uint32_t pos) const { return pos / block_positions; }
  // The row of K (V) at pos: row_elems() elements of dtype.
  void* k_row(uint32_t pos) const { return row_in(k_blocks, pos); }
  void* v_row(uint32_t pos) const { return row_in(v_blocks, pos); }

 private:
  void* row_in(void* const* blocks, uint32_t pos) const {
    return static_cast<char*>(blocks[block_of(pos)]) + (pos % block_positions) * row_bytes();
  }
};

// A contiguous per-sequence cache owning its memory: one block of `capacity` positions.
// Move-only (the view points into heap storage that moves with it; a copy would not).
class ContiguousKvCache {
 public:
  ContiguousKvCache(const ContiguousKvCache&) = delete;
  ContiguousKvCache& operator=(const ContiguousKvCache&) = delete;
  ContiguousKvCache(ContiguousKvCache&&) noexcept = default;
  ContiguousKvCache& operator=(ContiguousKvCache&&) noexcept = default;
  // kInvalidArgument on a zero size; the storage is zero-filled.
  static StatusOr<ContiguousKvCache> create(KvDtype dtype, uint32_t num_kv_heads,
                                            uint32_t head_dim, uint32_t capacity);
  ContiguousKvCache() = default;
  KvCacheView& view() { return view_; }
  const KvCacheView& view() const { return view_; }

 private:
  std::vector<unsigned char> k_, v_;
  std::vector<void*> k_block_, v_block_;
  KvCacheView view_;
};

}  // namespace moe::models::kernels
