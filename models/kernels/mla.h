// Multi-head latent attention (DeepSeek-V2/V3) over its compressed KV cache.
//
// Per token the cache holds one row of kv_lora_rank + qk_rope_head_dim FP32 values:
// [c_kv (the latent, after kv_a_layernorm) | k_rope (the shared rotary key, rope applied)].
// kv_b_proj (HF layout [num_heads * (qk_nope + v)][kv_lora_rank], BF16) decompresses the
// latent: for head h, rows [h*(qk_nope+v), +qk_nope) are W_UK_h, the next v rows W_UV_h:
//   k_h = [W_UK_h c_kv | k_rope],  v_h = W_UV_h c_kv.
//
// Shapes (FP32, row-major):
//   q       [tokens][num_heads][qk_nope + qk_rope]  ([q_nope | q_rope], rope applied)
//   kv_new  [tokens][kv_lora_rank + qk_rope]        the new tokens' cache rows
//   out     [tokens][num_heads][v_head_dim]         attention output before o_proj
// Causality, positions and `length` as in attention.h: new tokens take positions
// [length, length + tokens) and see [0, own position].
// Softmax scale: 1/sqrt(qk_nope + qk_rope) unless given. DeepSeek-V3's YaRN mscale
// correction of the scale (and its rope scaling) is out of scope.
//
// Two forms, equal up to FP32 rounding:
//   kAbsorbed: q_nope is absorbed through W_UK into latent space (q_lat = W_UK_h^T q_nope),
//              attention runs over the latent cache directly, o_lat = sum p c_kv, and the
//              output is W_UV_h o_lat. Reads kv_lora_rank + rope values per position:
//              the decode form.
//   kNaive:    every cached latent is decompressed into per-head K and V (a GEMM over the
//              whole prefix), then ordinary attention: the prefill form for short contexts,
//              and the reference the absorbed form is tested against.
// Products go through cblas. Errors as in attention.h (kInvalidArgument on shape mismatch,
// kResourceExhausted when the cache is full; nothing written then). Scratch: grows to the
// largest call, then reused; one per thread. out must not overlap the inputs or the cache.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/base/status.h"

namespace moe::models::kernels {

struct MlaAttentionShape {
  uint32_t num_heads = 0;
  uint32_t kv_lora_rank = 0;
  uint32_t qk_nope_head_dim = 0;
  uint32_t qk_rope_head_dim = 0;
  uint32_t v_head_dim = 0;
  float scale = 0.0f;  // 0: 1/sqrt(qk_nope + qk_rope)
};

// kv_b_proj widened to FP32 once (immutable after create; shareable across threads).
class MlaWeights {
 public:
  // kv_b_proj_bf16.size() must be num_heads * (qk_nope + v) * kv_lora_rank; every shape
  // field nonzero. kInvalidArgument naming the sizes otherwise.
  static StatusOr<MlaWeights> create(const MlaAttentionShape& shape,
                                     std::span<const uint16_t> kv_b_proj_bf16);
  MlaWeights() = default;
  const MlaAttentionShape& shape() const { return shape_; }
  // W_UK_h: qk_nope rows of kv_lora_rank; W_UV_h: v rows of kv_lora_rank (row stride rank).
  const float* w_uk(uint32_t head) const;
  const float* w_uv(uint32_t head) const;

 private:
  MlaAttentionShape shape_;
  std::vector<float> kv_b_;  // [heads * (nope + v)][rank]
};

// One sequence's latent cache in one layer, in blocks of positions (see kv_cache.h).
struct MlaCacheView {
  uint32_t kv_lora_rank = 0;
  uint32_t qk_rope_head_dim = 0;
  uint32_t block_positions = 0;
  uint32_t num_blocks = 0;
  float* const* blocks = nullptr;
  uint32_t length = 0;

  uint32_t capacity() const { return block_positions * num_blocks; }
  uint32_t row_elems() const { return kv_lora_rank + qk_rope_head_dim; }
  uint32_t block_of(uint32_t pos) const { return pos / block_positions; }
  float* row(uint32_t pos) const {
    return blocks[block_of(pos)] + size_t{pos % block_positions} * row_elems();
  }
};

// Move-only, like ContiguousKvCache.
class ContiguousMlaCache {
 public:
  ContiguousMlaCache(const ContiguousMlaCache&) = delete;
  ContiguousMlaCache& operator=(const ContiguousMlaCache&) = delete;
  ContiguousMlaCache(ContiguousMlaCache&&) noexcept = default;
  ContiguousMlaCache& operator=(ContiguousMlaCache&&) noexcept = default;
  static StatusOr<ContiguousMlaCache> create(uint32_t kv_lora_rank, uint32_t qk_rope_head_dim,
                                             uint32_t capacity);
  ContiguousMlaCache() = default;
  MlaCacheView& view() { return view_; }

 private:
  std::vector<float> data_;
  std::vector<float*> block_;
  MlaCacheView view_;
};

enum class MlaForm : uint8_t { kAbsorbed = 0, kNaive = 1 };

struct MlaScratch {
  std::vector<float> a, b, c;
};

// `num_tokens` new tokens of one sequence (prefill, or decode of one sequence).
Status mla_attention(const MlaWeights& weights, const float* q, const float* kv_new,
                     uint32_t num_tokens, MlaCacheView& cache, MlaForm form,
                     MlaScratch& scratch, float* out);

// One new token for each sequence; all checked before any is written; each cache once.
Status mla_decode(const MlaWeights& weights, const float* q, const float* kv_new,
                  std::span<MlaCacheView* const> caches, MlaForm form, MlaScratch& scratch,
                  float* out);

}  // namespace moe::models::kernels
