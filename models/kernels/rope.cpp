// RoPE: a table of cos/sin per (position, frequency), applied per head.
//
// Design: the angles are computed once in double (p * inv_freq loses precision in FP32 at
// long positions) and stored as FP32, so apply() is two loads and four multiply-adds per
// pair, with contiguous inner loops for the half-split form. Positions are validated for the
// whole batch before anything is written, so a refused call leaves x untouched.
#include "models/kernels/rope.h"

#include <cmath>

#include "runtime/base/check.h"

namespace moe::models::kernels {

StatusOr<RopeTable> RopeTable::create(uint32_t rotary_dim, double theta, uint32_t max_positions,
                                      RopeStyle style) {
  if (rotary_dim == 0 || rotary_dim % 2 != 0)
    return make_error(StatusCode::kInvalidArgument, "rope: rotary_dim %u must be even and > 0",
                      rotary_dim);
  if (!(theta > 1.0) || !std::isfinite(theta))
    return make_error(StatusCode::kInvalidArgument, "rope: theta %g must be finite and > 1",
                      theta);
  if (max_positions == 0)
    return make_error(StatusCode::kInvalidArgument, "rope: max_positions must be > 0");
  RopeTable t;
  t.rotary_dim_ = rotary_dim;
  t.max_positions_ = max_positions;
  t.style_ = style;
  const uint32_t half = rotary_dim / 2;
  t.cos_.resize(size_t{max_positions} * half);
  t.sin_.resize(size_t{max_positions} * half);
  std::vector<double> inv_freq(half);
  for (uint32_t i = 0; i < half; ++i)
    inv_freq[i] = std::pow(theta, -2.0 * i / static_cast<double>(rotary_dim));
  for (uint32_t p = 0; p < max_positions; ++p)
    for (uint32_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * inv_freq[i];
      t.cos_[size_t{p} * half + i] = static_cast<float>(std::cos(angle));
      t.sin_[size_t{p} * half + i] = static_cast<float>(std::sin(angle));
    }
  return t;
}

Status RopeTable::apply(float* x, size_t row_stride, uint32_t rows, uint32_t heads,
                        size_t head_stride, const int32_t* positions) const {
  MOE_ASSERT(rotary_dim_ > 0);
  MOE_ASSERT(heads <= 1 || head_stride >= rotary_dim_);
  for (uint32_t r = 0; r < rows; ++r)
    if (positions[r] < 0 || static_cast<uint32_t>(positions[r]) >= max_positions_)
      return make_error(StatusCode::kOutOfRange,
                        "rope: row %u has position %d outside the table's [0, %u)", r,
                        positions[r], max_positions_);
  const uint32_t half = rotary_dim_ / 2;
  for (uint32_t r = 0; r < rows; ++r) {
    const float* c = cos_row(static_cast<uint32_t>(positions[r]));
    const float* s = sin_row(static_cast<uint32_t>(positions[r]));
    for (uint32_t h = 0; h < heads; ++h) {
      float* v = x + r * row_stride + h * head_stride;
      if (style_ == RopeStyle::kHalfSplit) {
        float* lo = v;
        float* hi = v + half;
        for (uint32_t i = 0; i < half; ++i) {
          const float a = lo[i], b = hi[i];
          lo[i] = a * c[i] - b * s[i];
          hi[i] = b * c[i] + a * s[i];
        }
      } else {
        for (uint32_t i = 0; i < half; ++i) {
          const float a = v[2 * i], b = v[2 * i + 1];
          v[2 * i] = a * c[i] - b * s[i];
          v[2 * i + 1] = b * c[i] + a * s[i];
        }
      }
    }
  }
  return ok_status();
}

}  // namespace moe::models::kernels
