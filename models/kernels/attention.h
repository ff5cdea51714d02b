// Grouped-query attention (GQA) over a KV cache: prefill and decode.
//
// Shapes (elements, row-major, FP32):
//   q      [tokens][num_heads][head_dim]     queries of the new tokens (rope already applied)
//   k_new  [tokens][num_kv_heads][head_dim]  their keys (rope applied) and values,
//   v_new  [tokens][num_kv_heads][head_dim]  appended to the cache
//   out    [tokens][num_heads][head_dim]
// Query head h reads KV head h / (num_heads / num_kv_heads) (consecutive query heads share a
// KV head, as in HF's repeat_kv). New tokens of a sequence take positions
// [cache.length, cache.length + tokens); token at position p attends to positions [0, p]
// (causal), with softmax(q k^T * scale) v, scale = 1/sqrt(head_dim) unless given. Scores and
// sums are FP32; the softmax subtracts the row maximum first (stable for any finite input).
//
// Errors (nothing is written, no cache advanced): kInvalidArgument when the cache's shape
// or the head counts disagree; kResourceExhausted when the new tokens do not fit in the
// cache (naming the sequence, its length, the tokens and the capacity).
//
// Aliasing: out must not overlap q, k_new, v_new or the cache. Scratch: grows to the longest
// context seen and is then reused, so steady-state decode allocates nothing. One scratch per
// thread; calls on disjoint sequences may run concurrently with separate scratches.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/kernels/kv_cache.h"
#include "runtime/base/status.h"

namespace moe::models::kernels {

struct AttentionShape {
  uint32_t num_heads = 0;
  uint32_t num_kv_heads = 0;   // divides num_heads
  uint32_t head_dim = 0;
  float scale = 0.0f;          // 0: 1/sqrt(head_dim)
};

struct AttentionScratch {
  std::vector<float> scores;
};

// Prefill (or a chunk of it): `num_tokens` new tokens of one sequence.
Status attention_prefill(const AttentionShape& shape, const float* q, const float* k_new,
                         const float* v_new, uint32_t num_tokens, KvCacheView& cache,
                         AttentionScratch& scratch, float* out);

// Decode: one new token for each of caches.size() sequences (row s of q/k_new/v_new/out is
// sequence s). All sequences are checked before any is written; a sequence appears at most
// once in `caches`.
Status attention_decode(const AttentionShape& shape, const float* q, const float* k_new,
                        const float* v_new, std::span<KvCacheView* const> caches,
                        AttentionScratch& scratch, float* out);

}  // namespace moe::models::kernels
