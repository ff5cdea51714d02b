// Multi-head latent attention: absorbed and naive forms over a latent cache.
//
// Design: both forms first append the new rows, then treat the sequence's prefix block by
// block. The absorbed form never materialises per-head K or V: q_lat = q_nope W_UK (one
// GEMM per head over all new tokens), scores = scale (q_lat C^T + q_rope Kr^T) (two GEMMs
// per block, all heads at once since the latent is shared by every head), a stable softmax
// per head row, o_lat = P C (a GEMM per block, accumulating), and out = o_lat W_UV^T (one
// GEMM per head). The naive form decompresses the prefix (C W^T, a GEMM per block) and runs
// plain per-head attention with the FP32 dot of norm.h: simple, and independent enough of
// the absorbed algebra to test it.
#include "models/kernels/mla.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "interconnect/quant_int8.h"
#include "models/kernels/norm.h"
#include "runtime/base/check.h"

namespace moe::models::kernels {
namespace {

// p = softmax(p) in place, max-subtracted.
void softmax_row(float* p, uint32_t n) {
  float m = -INFINITY;
  for (uint32_t j = 0; j < n; ++j) m = std::max(m, p[j]);
  float sum = 0.0f;
  for (uint32_t j = 0; j < n; ++j) {
    p[j] = std::exp(p[j] - m);
    sum += p[j];
  }
  const float inv = 1.0f / sum;
  for (uint32_t j = 0; j < n; ++j) p[j] *= inv;
}

float scale_of(const MlaAttentionShape& s) {
  return s.scale > 0 ? s.scale
                     : 1.0f / std::sqrt(static_cast<float>(s.qk_nope_head_dim + s.qk_rope_head_dim));
}

Status check_cache(const MlaAttentionShape& s, const MlaCacheView& c, uint32_t seq,
                   uint32_t num_tokens) {
  if (c.kv_lora_rank != s.kv_lora_rank || c.qk_rope_head_dim != s.qk_rope_head_dim ||
      c.block_positions == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "mla: sequence %u's cache rows are %u latent + %u rope (blocks of %u), "
                      "the layer has %u + %u",
                      seq, c.kv_lora_rank, c.qk_rope_head_dim, c.block_positions,
                      s.kv_lora_rank, s.qk_rope_head_dim);
  if (uint64_t{c.length} + num_tokens > c.capacity())
    return make_error(StatusCode::kResourceExhausted,
                      "mla: sequence %u holds %u positions, %u new tokens exceed its capacity "
                      "of %u",
                      seq, c.length, num_tokens, c.capacity());
  return ok_status();
}

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

void absorbed(const MlaWeights& w, const float* q, uint32_t n, const MlaCacheView& cache,
              MlaScratch& scratch, float* out) {
  const MlaAttentionShape& s = w.shape();
  const int H = s.num_heads, r = s.kv_lora_rank, dn = s.qk_nope_head_dim;
  const int dr = s.qk_rope_head_dim, dv = s.v_head_dim, qd = dn + dr, row = r + dr;
  const uint32_t start = cache.length, bp = cache.block_positions;
  grow(scratch.a, size_t{n} * H * r);  // q_lat [n][H][r]
  grow(scratch.c, size_t{n} * H * r);  // o_lat [n][H][r]
  grow(scratch.b, static_cast<size_t>(H) * (start + n));
  float* q_lat = scratch.a.data();
  float* o_lat = scratch.c.data();
  for (int h = 0; h < H; ++h)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, r, dn, 1.0f, q + h * qd, H * qd,
                w.w_uk(h), r, 0.0f, q_lat + h * r, H * r);
  const float scale = scale_of(s);
  for (uint32_t t = 0; t < n; ++t) {
    const int visible = static_cast<int>(start + t + 1);
    float* scores = scratch.b.data();  // [H][visible]
    for (int b0 = 0; b0 < visible; b0 += bp) {
      const int nb = std::min<int>(bp, visible - b0);
      const float* blk = cache.blocks[b0 / bp];
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, H, nb, r, scale,
                  q_lat + size_t{t} * H * r, r, blk, row, 0.0f, scores + b0, visible);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, H, nb, dr, scale,
                  q + size_t{t} * H * qd + dn, qd, blk + r, row, 1.0f, scores + b0, visible);
    }
    for (int h = 0; h < H; ++h) softmax_row(scores + static_cast<size_t>(h) * visible, visible);
    for (int b0 = 0; b0 < visible; b0 += bp) {
      const int nb = std::min<int>(bp, visible - b0);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, H, r, nb, 1.0f, scores + b0,
                  visible, cache.blocks[b0 / bp], row, b0 == 0 ? 0.0f : 1.0f,
                  o_lat + size_t{t} * H * r, r);
    }
  }
  for (int h = 0; h < H; ++h)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, dv, r, 1.0f, o_lat + h * r, H * r,
                w.w_uv(h), r, 0.0f, out + h * dv, H * dv);
}

void naive(const MlaWeights& w, const float* q, uint32_t n, const MlaCacheView& cache,
           MlaScratch& scratch, float* out) {
  const MlaAttentionShape& s = w.shape();
  const uint32_t H = s.num_heads, r = s.kv_lora_rank, dn = s.qk_nope_head_dim;
  const uint32_t dr = s.qk_rope_head_dim, dv = s.v_head_dim, qd = dn + dr, row = r + dr;
  const uint32_t total = cache.length + n, bp = cache.block_positions;
  const uint32_t kv_width = H * (dn + dv);
  grow(scratch.a, size_t{total} * kv_width);  // decompressed [pos][H][k_nope | v]
  grow(scratch.b, total);
  float* kv = scratch.a.data();
  for (uint32_t b0 = 0; b0 < total; b0 += bp) {
    const uint32_t nb = std::min(bp, total - b0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, kv_width, r, 1.0f,
                cache.blocks[b0 / bp], row, w.w_uk(0), r, 0.0f, kv + size_t{b0} * kv_width,
                kv_width);
  }
  const float scale = scale_of(s);
  float* p = scratch.b.data();
  for (uint32_t t = 0; t < n; ++t) {
    const uint32_t visible = cache.length + t + 1;
    for (uint32_t h = 0; h < H; ++h) {
      const float* qh = q + (size_t{t} * H + h) * qd;
      for (uint32_t j = 0; j < visible; ++j) {
        const float* k = kv + size_t{j} * kv_width + h * (dn + dv);
        p[j] = scale * (dot(qh, k, dn) + dot(qh + dn, cache.row(j) + r, dr));
      }
      softmax_row(p, visible);
      float* o = out + (size_t{t} * H + h) * dv;
      std::fill(o, o + dv, 0.0f);
      for (uint32_t j = 0; j < visible; ++j) {
        const float* v = kv + size_t{j} * kv_width + h * (dn + dv) + dn;
        for (uint32_t i = 0; i < dv; ++i) o[i] += p[j] * v[i];
      }
    }
  }
}

void run(const MlaWeights& w, const float* q, const float* kv_new, uint32_t n,
         MlaCacheView& cache, MlaForm form, MlaScratch& scratch, float* out) {
  for (uint32_t t = 0; t < n; ++t)
    std::copy_n(kv_new + size_t{t} * cache.row_elems(), cache.row_elems(),
                cache.row(cache.length + t));
  if (form == MlaForm::kAbsorbed)
    absorbed(w, q, n, cache, scratch, out);
  else
    naive(w, q, n, cache, scratch, out);
  cache.length += n;
}

}  // namespace

StatusOr<MlaWeights> MlaWeights::create(const MlaAttentionShape& shape,
                                        std::span<const uint16_t> kv_b_proj_bf16) {
  const MlaAttentionShape& s = shape;
  if (s.num_heads == 0 || s.kv_lora_rank == 0 || s.qk_nope_head_dim == 0 ||
      s.qk_rope_head_dim == 0 || s.v_head_dim == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "mla: heads %u, kv_lora_rank %u, qk_nope %u, qk_rope %u, v %u must all "
                      "be > 0",
                      s.num_heads, s.kv_lora_rank, s.qk_nope_head_dim, s.qk_rope_head_dim,
                      s.v_head_dim);
  const size_t want = size_t{s.num_heads} * (s.qk_nope_head_dim + s.v_head_dim) * s.kv_lora_rank;
  if (kv_b_proj_bf16.size() != want)
    return make_error(StatusCode::kInvalidArgument,
                      "mla: kv_b_proj has %zu elements, expected %u x (%u + %u) x %u = %zu",
                      kv_b_proj_bf16.size(), s.num_heads, s.qk_nope_head_dim, s.v_head_dim,
                      s.kv_lora_rank, want);
  MlaWeights w;
  w.shape_ = shape;
  w.kv_b_.resize(want);
  for (size_t i = 0; i < want; ++i) w.kv_b_[i] = ic::bf16_to_float(kv_b_proj_bf16[i]);
  return w;
}

const float* MlaWeights::w_uk(uint32_t head) const {
  return kv_b_.data() +
         size_t{head} * (shape_.qk_nope_head_dim + shape_.v_head_dim) * shape_.kv_lora_rank;
}
const float* MlaWeights::w_uv(uint32_t head) const {
  return w_uk(head) + size_t{shape_.qk_nope_head_dim} * shape_.kv_lora_rank;
}

StatusOr<ContiguousMlaCache> ContiguousMlaCache::create(uint32_t kv_lora_rank,
                                                        uint32_t qk_rope_head_dim,
                                                        uint32_t capacity) {
  if (kv_lora_rank == 0 || qk_rope_head_dim == 0 || capacity == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "mla cache: kv_lora_rank %u, qk_rope %u, capacity %u must all be > 0",
                      kv_lora_rank, qk_rope_head_dim, capacity);
  ContiguousMlaCache c;
  c.view_ = MlaCacheView{kv_lora_rank, qk_rope_head_dim, capacity, 1, nullptr, 0};
  c.data_.assign(size_t{capacity} * c.view_.row_elems(), 0.0f);
  c.block_ = {c.data_.data()};
  c.view_.blocks = c.block_.data();
  return c;
}

Status mla_attention(const MlaWeights& weights, const float* q, const float* kv_new,
                     uint32_t num_tokens, MlaCacheView& cache, MlaForm form,
                     MlaScratch& scratch, float* out) {
  MOE_TRY(check_cache(weights.shape(), cache, 0, num_tokens));
  if (num_tokens > 0) run(weights, q, kv_new, num_tokens, cache, form, scratch, out);
  return ok_status();
}

Status mla_decode(const MlaWeights& weights, const float* q, const float* kv_new,
                  std::span<MlaCacheView* const> caches, MlaForm form, MlaScratch& scratch,
                  float* out) {
  const MlaAttentionShape& s = weights.shape();
  for (uint32_t i = 0; i < caches.size(); ++i) {
    if (caches[i] == nullptr)
      return make_error(StatusCode::kInvalidArgument, "mla: sequence %u has no cache", i);
    MOE_TRY(check_cache(s, *caches[i], i, 1));
  }
  const size_t q_row = size_t{s.num_heads} * (s.qk_nope_head_dim + s.qk_rope_head_dim);
  const size_t kv_row = size_t{s.kv_lora_rank} + s.qk_rope_head_dim;
  const size_t out_row = size_t{s.num_heads} * s.v_head_dim;
  for (uint32_t i = 0; i < caches.size(); ++i)
    run(weights, q + i * q_row, kv_new + i * kv_row, 1, *caches[i], form, scratch,
        out + i * out_row);
  return ok_status();
}

}  // namespace moe::models::kernels
