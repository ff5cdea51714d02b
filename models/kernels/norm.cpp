// RMSNorm kernels.
//
// Design: one templated row kernel (weight element type as a parameter, BF16 widened on load)
// behind the overloads, so the BF16 and FP32 weights share a single loop. The reduction uses
// 8 independent partial sums so that -O2 vectorises it without reassociating a single sum
// (which it may not do without -ffast-math); the scaling loop is a plain element-wise loop.
#include "models/kernels/norm.h"

#include <cmath>

#include "interconnect/quant_int8.h"
#include "runtime/base/check.h"

namespace moe::models::kernels {
namespace {

inline float load(const float* w, uint32_t i) { return w[i]; }
inline float load(const uint16_t* w, uint32_t i) { return ic::bf16_to_float(w[i]); }

template <typename W>
void norm_row(const float* x, const W* weight, uint32_t dim, float eps, float* out) {
  const float inv_rms = 1.0f / std::sqrt(sum_squares(x, dim) / static_cast<float>(dim) + eps);
  for (uint32_t i = 0; i < dim; ++i) out[i] = x[i] * inv_rms * load(weight, i);
}

template <typename W>
void rms_norm_impl(const float* x, const W* weight, uint32_t rows, uint32_t dim, float eps,
                   float* out) {
  MOE_ASSERT(dim > 0 && eps > 0);
  for (uint32_t r = 0; r < rows; ++r)
    norm_row(x + size_t{r} * dim, weight, dim, eps, out + size_t{r} * dim);
}

template <typename W>
void add_rms_norm_impl(float* x, const float* residual, const W* weight, uint32_t rows,
                       uint32_t dim, float eps, float* out) {
  MOE_ASSERT(dim > 0 && eps > 0 && out != x);
  for (uint32_t r = 0; r < rows; ++r) {
    float* xr = x + size_t{r} * dim;
    const float* rr = residual + size_t{r} * dim;
    for (uint32_t i = 0; i < dim; ++i) xr[i] += rr[i];
    norm_row(xr, weight, dim, eps, out + size_t{r} * dim);
  }
}

template <typename W>
void rms_norm_heads_impl(float* x, size_t row_stride, uint32_t rows, uint32_t heads,
                         uint32_t head_dim, const W* weight, float eps) {
  MOE_ASSERT(head_dim > 0 && eps > 0 && row_stride >= size_t{heads} * head_dim);
  for (uint32_t r = 0; r < rows; ++r)
    for (uint32_t h = 0; h < heads; ++h) {
      float* xh = x + r * row_stride + size_t{h} * head_dim;
      norm_row(xh, weight, head_dim, eps, xh);
    }
}

}  // namespace

float sum_squares(const float* x, uint32_t n) {
  float acc[8] = {};
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (uint32_t l = 0; l < 8; ++l) acc[l] += x[i + l] * x[i + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += x[i] * x[i];
  return s;
}

float dot(const float* a, const float* b, uint32_t n) {
  float acc[8] = {};
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (uint32_t l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void rms_norm(const float* x, const uint16_t* weight_bf16, uint32_t rows, uint32_t dim,
              float eps, float* out) {
  rms_norm_impl(x, weight_bf16, rows, dim, eps, out);
}
void rms_norm(const float* x, const float* weight, uint32_t rows, uint32_t dim, float eps,
              float* out) {
  rms_norm_impl(x, weight, rows, dim, eps, out);
}
void add_rms_norm(float* x, const float* residual, const uint16_t* weight_bf16, uint32_t rows,
                  uint32_t dim, float eps, float* out) {
  add_rms_norm_impl(x, residual, weight_bf16, rows, dim, eps, out);
}
void add_rms_norm(float* x, const float* residual, const float* weight, uint32_t rows,
                  uint32_t dim, float eps, float* out) {
  add_rms_norm_impl(x, residual, weight, rows, dim, eps, out);
}
void rms_norm_heads(float* x, size_t row_stride, uint32_t rows, uint32_t heads,
                    uint32_t head_dim, const uint16_t* weight_bf16, float eps) {
  rms_norm_heads_impl(x, row_stride, rows, heads, head_dim, weight_bf16, eps);
}
void rms_norm_heads(float* x, size_t row_stride, uint32_t rows, uint32_t heads,
                    uint32_t head_dim, const float* weight, float eps) {
  rms_norm_heads_impl(x, row_stride, rows, heads, head_dim, weight, eps);
}

}  // namespace moe::models::kernels
