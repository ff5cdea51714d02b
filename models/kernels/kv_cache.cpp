// Contiguous KV cache: one block per sequence, K and V in separate zeroed buffers.
#include "models/kernels/kv_cache.h"

namespace moe::models::kernels {

StatusOr<ContiguousKvCache> ContiguousKvCache::create(KvDtype dtype, uint32_t num_kv_heads,
                                                      uint32_t head_dim, uint32_t capacity) {
  if (num_kv_heads == 0 || head_dim == 0 || capacity == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "kv cache: num_kv_heads %u, head_dim %u, capacity %u must all be > 0",
                      num_kv_heads, head_dim, capacity);
  ContiguousKvCache c;
  c.view_.dtype = dtype;
  c.view_.num_kv_heads = num_kv_heads;
  c.view_.head_dim = head_dim;
  c.view_.block_positions = capacity;
  c.view_.num_blocks = 1;
  const size_t bytes = size_t{capacity} * c.view_.row_bytes();
  c.k_.assign(bytes, 0);
  c.v_.assign(bytes, 0);
  c.k_block_ = {c.k_.data()};
  c.v_block_ = {c.v_.data()};
  c.view_.k_blocks = c.k_block_.data();
  c.view_.v_blocks = c.v_block_.data();
  return c;
}

}  // namespace moe::models::kernels
