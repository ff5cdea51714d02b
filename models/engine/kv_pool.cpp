// KvPool and SequenceKv: a free-list of blocks over one HBM block, and block tables.
#include "models/engine/kv_pool.h"

#include <algorithm>

#include "runtime/base/strformat.h"

namespace moe::models {

StatusOr<KvPool> KvPool::create(mem::GlobalMemory& memory, dev::NpuId npu, uint32_t rank,
                                const KvPoolShape& shape) {
  if (shape.num_layers == 0 || shape.num_kv_heads == 0 || shape.head_dim == 0 ||
      shape.block_positions == 0 || shape.num_blocks == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "kv pool of rank %u: layers %u, kv heads %u, head dim %u, block positions "
                      "%u and blocks %u must all be nonzero",
                      rank, shape.num_layers, shape.num_kv_heads, shape.head_dim,
                      shape.block_positions, shape.num_blocks);
  KvPool pool;
  pool.shape_ = shape;
  pool.rank_ = rank;
  const uint64_t page = memory.page_bytes();
  if (shape.block_id_bytes() > page)
    return make_error(StatusCode::kInvalidArgument,
                      "kv pool of rank %u: one block id takes %llu bytes over %u layers (K and V "
                      "of %u positions); at most one HBM page (%llu): use fewer block positions",
                      rank, static_cast<unsigned long long>(shape.block_id_bytes()), shape.num_layers,
                      shape.block_positions, static_cast<unsigned long long>(page));
  pool.per_chunk_ = static_cast<uint32_t>(std::min<uint64_t>(page / shape.block_id_bytes(), shape.num_blocks));
  pool.chunk_bytes_ = pool.per_chunk_ * shape.block_id_bytes();
  const uint32_t chunks = (shape.num_blocks + pool.per_chunk_ - 1) / pool.per_chunk_;
  for (uint32_t i = 0; i < chunks; ++i) {
    auto hbm = HbmBlock::allocate(memory, npu, pool.chunk_bytes_, "kv pool chunk");
    if (!hbm.ok())
      return Status(hbm.status()).with_context(strformat("kv pool of rank %u (%u blocks)", rank, shape.num_blocks));
    pool.chunks_.push_back(std::move(hbm).value());
  }
  pool.free_.reserve(shape.num_blocks);
  for (uint32_t b = shape.num_blocks; b-- > 0;) pool.free_.push_back(b);
  return pool;
}

Status KvPool::take(uint32_t count, std::vector<uint32_t>* out) {
  if (count > free_.size())
    return make_error(StatusCode::kResourceExhausted,
                      "kv cache of rank %u is full: %u blocks of %u positions needed, %zu of %u "
                      "free",
                      rank_, count, shape_.block_positions, free_.size(), shape_.num_blocks);
  for (uint32_t i = 0; i < count; ++i) {
    out->push_back(free_.back());
    free_.pop_back();
  }
  return ok_status();
}

void KvPool::give_back(uint32_t block) { free_.push_back(block); }

uint32_t SequenceKv::capacity() const { return num_blocks() * block_positions_; }

Status SequenceKv::reserve(KvPool& pool, uint32_t positions) {
  block_positions_ = pool.shape().block_positions;
  const uint32_t have = num_blocks();
  const uint32_t need = (positions + block_positions_ - 1) / block_positions_;
  if (need > have) MOE_TRY(pool.take(need - have, &blocks_));
  if (views_.size() != pool.shape().num_layers || need > have) rebuild_views(pool);
  return ok_status();
}

void SequenceKv::rebuild_views(const KvPool& pool) {
  const KvPoolShape& s = pool.shape();
  k_ptrs_.resize(s.num_layers);
  v_ptrs_.resize(s.num_layers);
  views_.resize(s.num_layers);
  for (uint32_t l = 0; l < s.num_layers; ++l) {
    k_ptrs_[l].resize(blocks_.size());
    v_ptrs_[l].resize(blocks_.size());
    for (size_t i = 0; i < blocks_.size(); ++i) {
      k_ptrs_[l][i] = pool.k_block(l, blocks_[i]);
      v_ptrs_[l][i] = pool.v_block(l, blocks_[i]);
    }
    kernels::KvCacheView& v = views_[l];
    v.dtype = s.dtype;
    v.num_kv_heads = s.num_kv_heads;
    v.head_dim = s.head_dim;
    v.block_positions = s.block_positions;
    v.num_blocks = static_cast<uint32_t>(blocks_.size());
    v.k_blocks = k_ptrs_[l].data();
    v.v_blocks = v_ptrs_[l].data();
    v.length = length_;
  }
}

void SequenceKv::set_length(uint32_t length) {
  length_ = length;
  for (kernels::KvCacheView& v : views_) v.length = length;
}

void SequenceKv::release(KvPool& pool) {
  for (uint32_t b : blocks_) pool.give_back(b);
  blocks_.clear();
  k_ptrs_.clear();
  v_ptrs_.clear();
  views_.clear();
  length_ = 0;
}

}  // namespace moe::models
