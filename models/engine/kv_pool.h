// The paged KV cache of one attention data-parallel rank: a pool of fixed-size blocks in the
// rank's HBM, and per sequence a block table.
//
// Layout: a block holds `block_positions` positions of one layer's K (or V) for every KV head
// (models/kernels/kv_cache.h's row layout). The pool is made of page-sized HBM chunks
// (hbm_block.h); a chunk holds `blocks_per_chunk` block ids, for each of them the K and V
// blocks of every layer: [layer][K|V][block in chunk]. A block id names the same block in every layer,
// so a sequence has one block table for all layers (vLLM's scheme): position p of a sequence
// is row p % block_positions of block table[p / block_positions].
//
// SequenceKv is a sequence's table plus the per-layer KvCacheViews the attention kernels read
// and append through. reserve() grows the table (all or nothing: kResourceExhausted naming the
// rank, the blocks needed and free, and nothing changes); set_length() sets every layer's view
// to a length (the engine commits or rolls back a step with it); release() returns the blocks.
//
// Thread-safety: a pool and its sequences are driven by one thread at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "models/engine/hbm_block.h"
#include "models/kernels/kv_cache.h"

namespace moe::models {

struct KvPoolShape {
  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t head_dim = 0;
  kernels::KvDtype dtype = kernels::KvDtype::kFloat32;
  uint32_t block_positions = 16;
  uint32_t num_blocks = 0;
  uint64_t block_bytes() const {
    return uint64_t{block_positions} * num_kv_heads * head_dim * kernels::kv_dtype_bytes(dtype);
  }
  // Bytes of one block id over every layer, K and V.
  uint64_t block_id_bytes() const { return block_bytes() * 2 * num_layers; }
};

class KvPool {
 public:
  KvPool() = default;
  // kInvalidArgument for a zero size or a block id larger than an HBM page; allocation
  // errors of the HBM chunks.
  static StatusOr<KvPool> create(mem::GlobalMemory& memory, dev::NpuId npu, uint32_t rank,
                                 const KvPoolShape& shape);

  const KvPoolShape& shape() const { return shape_; }
  uint32_t rank() const { return rank_; }
  uint32_t free_blocks() const { return static_cast<uint32_t>(free_.size()); }
  uint32_t used_blocks() const { return shape_.num_blocks - free_blocks(); }
  // Takes `count` blocks into *out (appended), or none: kResourceExhausted.
  Status take(uint32_t count, std::vector<uint32_t>* out);
  void give_back(uint32_t block);
  void* k_block(uint32_t layer, uint32_t block) const { return at(layer, 0, block); }
  void* v_block(uint32_t layer, uint32_t block) const { return at(layer, 1, block); }
  // The same blocks as global addresses (a KV transfer over the fabric copies between them).
  mem::GlobalAddr k_block_addr(uint32_t layer, uint32_t block) const { return addr_at(layer, 0, block); }
  mem::GlobalAddr v_block_addr(uint32_t layer, uint32_t block) const { return addr_at(layer, 1, block); }
  uint64_t hbm_bytes() const { return uint64_t{chunks_.size()} * chunk_bytes_; }

 private:
  void* at(uint32_t layer, uint32_t kv, uint32_t block) const {
    const uint32_t chunk = block / per_chunk_, slot = block % per_chunk_;
    return chunks_[chunk].as<char>() +
           ((uint64_t{layer} * 2 + kv) * per_chunk_ + slot) * shape_.block_bytes();
  }
  mem::GlobalAddr addr_at(uint32_t layer, uint32_t kv, uint32_t block) const {
    const uint32_t chunk = block / per_chunk_, slot = block % per_chunk_;
    return chunks_[chunk].addr() + ((uint64_t{layer} * 2 + kv) * per_chunk_ + slot) * shape_.block_bytes();
  }
  KvPoolShape shape_;
  uint32_t rank_ = 0;
  uint32_t per_chunk_ = 1;
  uint64_t chunk_bytes_ = 0;
  std::vector<HbmBlock> chunks_;
  std::vector<uint32_t> free_;  // a stack; the lowest ids are handed out first
};

class SequenceKv {
 public:
  // Makes room for `positions` positions in total (>= the current capacity: no-op).
  Status reserve(KvPool& pool, uint32_t positions);
  // Sets every layer's length (<= capacity()).
  void set_length(uint32_t length);
  // Returns every block to the pool; the sequence is empty afterwards.
  void release(KvPool& pool);

  uint32_t length() const { return length_; }
  uint32_t capacity() const;
  uint32_t num_blocks() const { return static_cast<uint32_t>(blocks_.size()); }
  const std::vector<uint32_t>& block_table() const { return blocks_; }
  // The view of layer `layer` (its length is the sequence's until a kernel appends).
  kernels::KvCacheView& view(uint32_t layer) { return views_[layer]; }

 private:
  void rebuild_views(const KvPool& pool);
  std::vector<uint32_t> blocks_;
  std::vector<std::vector<void*>> k_ptrs_, v_ptrs_;  // per layer, per block
  std::vector<kernels::KvCacheView> views_;
  uint32_t length_ = 0;
  uint32_t block_positions_ = 0;
};

}  // namespace moe::models
