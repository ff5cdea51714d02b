// GQA attention core.
//
// Design: per (token, query head), three passes over the visible positions, walking the
// cache block by block (so a paged cache costs one table lookup per block, not per
// position): scores = scale * q.k (FP32 dot with 8 partial sums, BF16 widened on load),
// then max-subtracted exp and their sum, then out = sum p_j v_j / sum (an axpy per
// position over a contiguous head_dim row, which vectorises). New K/V rows are stored
// first, so a prefill chunk attends to itself causally through the same path as to the
// cached prefix. The element type of the cache is a template parameter of the inner loops.
#include "models/kernels/attention.h"

#include <algorithm>
#include <cmath>

#include "interconnect/quant_int8.h"
#include "models/kernels/norm.h"
#include "runtime/base/check.h"

namespace moe::models::kernels {
namespace {

inline float load(const float* p, uint32_t i) { return p[i]; }
inline float load(const uint16_t* p, uint32_t i) { return ic::bf16_to_float(p[i]); }
inline void store(float* p, uint32_t i, float v) { p[i] = v; }
inline void store(uint16_t* p, uint32_t i, float v) { p[i] = ic::float_to_bf16(v); }

template <typename E>
float dot_row(const float* q, const E* k, uint32_t n) {
  if constexpr (sizeof(E) == 4) {
    return dot(q, reinterpret_cast<const float*>(k), n);
  } else {
    float acc[8] = {};
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (uint32_t l = 0; l < 8; ++l) acc[l] += q[i + l] * load(k, i + l);
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; ++i) s += q[i] * load(k, i);
    return s;
  }
}

Status check_shape(const AttentionShape& shape, const KvCacheView& cache, uint32_t seq,
                   uint32_t num_tokens) {
  if (shape.num_heads == 0 || shape.num_kv_heads == 0 || shape.head_dim == 0 ||
      shape.num_heads % shape.num_kv_heads != 0)
    return make_error(StatusCode::kInvalidArgument,
                      "attention: num_heads %u must be a nonzero multiple of num_kv_heads %u "
                      "(head_dim %u)",
                      shape.num_heads, shape.num_kv_heads, shape.head_dim);
  if (cache.num_kv_heads != shape.num_kv_heads || cache.head_dim != shape.head_dim ||
      cache.block_positions == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "attention: sequence %u's cache holds %u kv heads x %u (block of %u "
                      "positions), the layer has %u x %u",
                      seq, cache.num_kv_heads, cache.head_dim, cache.block_positions,
                      shape.num_kv_heads, shape.head_dim);
  if (uint64_t{cache.length} + num_tokens > cache.capacity())
    return make_error(StatusCode::kResourceExhausted,
                      "attention: sequence %u holds %u positions, %u new tokens exceed its "
                      "capacity of %u",
                      seq, cache.length, num_tokens, cache.capacity());
  return ok_status();
}

template <typename E>
void append_rows(KvCacheView& cache, const float* k_new, const float* v_new,
                 uint32_t num_tokens) {
  const uint32_t n = static_cast<uint32_t>(cache.row_elems());
  for (uint32_t t = 0; t < num_tokens; ++t) {
    E* k = static_cast<E*>(cache.k_row(cache.length + t));
    E* v = static_cast<E*>(cache.v_row(cache.length + t));
    for (uint32_t i = 0; i < n; ++i) store(k, i, k_new[size_t{t} * n + i]);
    for (uint32_t i = 0; i < n; ++i) store(v, i, v_new[size_t{t} * n + i]);
  }
}

// Attention of one query head at position `pos` over cache positions [0, pos].
template <typename E>
void attend_head(const KvCacheView& cache, uint32_t kv_head, const float* q, uint32_t pos,
                 float scale, float* scores, float* out) {
  const uint32_t d = cache.head_dim;
  const size_t row = cache.row_elems();
  const uint32_t bp = cache.block_positions;
  const uint32_t visible = pos + 1;
  float max_score = -INFINITY;
  for (uint32_t b0 = 0; b0 < visible; b0 += bp) {
    const E* kb = static_cast<const E*>(cache.k_blocks[b0 / bp]) + size_t{kv_head} * d;
    const uint32_t n = std::min(bp, visible - b0);
    for (uint32_t j = 0; j < n; ++j) {
      const float s = dot_row(q, kb + j * row, d) * scale;
      scores[b0 + j] = s;
      max_score = std::max(max_score, s);
    }
  }
  float sum = 0.0f;
  for (uint32_t j = 0; j < visible; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  std::fill(out, out + d, 0.0f);
  for (uint32_t b0 = 0; b0 < visible; b0 += bp) {
    const E* vb = static_cast<const E*>(cache.v_blocks[b0 / bp]) + size_t{kv_head} * d;
    const uint32_t n = std::min(bp, visible - b0);
    for (uint32_t j = 0; j < n; ++j) {
      const float p = scores[b0 + j];
      const E* v = vb + j * row;
      for (uint32_t i = 0; i < d; ++i) out[i] += p * load(v, i);
    }
  }
  const float inv = 1.0f / sum;
  for (uint32_t i = 0; i < d; ++i) out[i] *= inv;
}

template <typename E>
void run_sequence(const AttentionShape& shape, const float* q, const float* k_new,
                  const float* v_new, uint32_t num_tokens, KvCacheView& cache, float* scores,
                  float* out) {
  append_rows<E>(cache, k_new, v_new, num_tokens);
  const uint32_t group = shape.num_heads / shape.num_kv_heads;
  const float scale = shape.scale > 0 ? shape.scale : 1.0f / std::sqrt(float(shape.head_dim));
  const size_t qrow = size_t{shape.num_heads} * shape.head_dim;
  for (uint32_t t = 0; t < num_tokens; ++t)
    for (uint32_t h = 0; h < shape.num_heads; ++h) {
      const size_t off = t * qrow + size_t{h} * shape.head_dim;
      attend_head<E>(cache, h / group, q + off, cache.length + t, scale, scores, out + off);
    }
  cache.length += num_tokens;
}

void run(const AttentionShape& shape, const float* q, const float* k_new, const float* v_new,
         uint32_t num_tokens, KvCacheView& cache, AttentionScratch& scratch, float* out) {
  const size_t need = size_t{cache.length} + num_tokens;
  if (scratch.scores.size() < need) scratch.scores.resize(need);
  if (cache.dtype == KvDtype::kFloat32)
    run_sequence<float>(shape, q, k_new, v_new, num_tokens, cache, scratch.scores.data(), out);
  else
    run_sequence<uint16_t>(shape, q, k_new, v_new, num_tokens, cache, scratch.scores.data(),
                           out);
}

}  // namespace

Status attention_prefill(const AttentionShape& shape, const float* q, const float* k_new,
                         const float* v_new, uint32_t num_tokens, KvCacheView& cache,
                         AttentionScratch& scratch, float* out) {
  MOE_TRY(check_shape(shape, cache, 0, num_tokens));
  run(shape, q, k_new, v_new, num_tokens, cache, scratch, out);
  return ok_status();
}

Status attention_decode(const AttentionShape& shape, const float* q, const float* k_new,
                        const float* v_new, std::span<KvCacheView* const> caches,
                        AttentionScratch& scratch, float* out) {
  for (uint32_t s = 0; s < caches.size(); ++s) {
    if (caches[s] == nullptr)
      return make_error(StatusCode::kInvalidArgument, "attention: sequence %u has no cache", s);
    MOE_TRY(check_shape(shape, *caches[s], s, 1));
  }
  const size_t qrow = size_t{shape.num_heads} * shape.head_dim;
  const size_t kvrow = size_t{shape.num_kv_heads} * shape.head_dim;
  for (uint32_t s = 0; s < caches.size(); ++s)
    run(shape, q + s * qrow, k_new + s * kvrow, v_new + s * kvrow, 1, *caches[s], scratch,
        out + s * qrow);
  return ok_status();
}

}  // namespace moe::models::kernels
