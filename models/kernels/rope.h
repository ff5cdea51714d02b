// Rotary position embeddings (RoPE) with a precomputed cos/sin table.
//
// A head vector's first `rotary_dim` elements are rotated by position-dependent angles
//   angle(p, i) = p * theta^(-2i / rotary_dim),   i in [0, rotary_dim / 2)
// and the remaining elements (partial rotary) are left alone. Two pairings:
//   kHalfSplit   ("rotate_half", HF Llama/Qwen/Mixtral): pair (x[i], x[i + rotary_dim/2]);
//   kInterleaved (GPT-J style, DeepSeek's MLA rope part in its original weight layout): pair
//                (x[2i], x[2i + 1]).
// Each pair (a, b) becomes (a cos - b sin, b cos + a sin). HF's DeepSeek-V3 code permutes
// q_pe/k_pe from interleaved to half-split and then applies rotate_half, which equals
// kInterleaved on the unpermuted layout. YaRN / NTK scaling of the frequencies is out of
// scope (DeepSeek-V3's yarn and its mscale are not modelled).
//
// Thread-safety: a built table is immutable; apply() may run concurrently on disjoint data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "runtime/base/status.h"

namespace moe::models::kernels {

enum class RopeStyle : uint8_t { kHalfSplit = 0, kInterleaved = 1 };

class RopeTable {
 public:
  // rotary_dim even and > 0, theta > 1, max_positions > 0 (table of max_positions x
  // rotary_dim/2 cos and sin, computed in double, stored FP32: 4 * max_positions * rotary_dim
  // bytes). kInvalidArgument naming the field otherwise.
  static StatusOr<RopeTable> create(uint32_t rotary_dim, double theta, uint32_t max_positions,
                                    RopeStyle style);
  RopeTable() = default;

  // Rotates, in place, `heads` heads of each of `rows` rows: head h of row r starts at
  // x + r * row_stride + h * head_stride (elements) and its first rotary_dim values are
  // rotated by positions[r]. Preconditions: head_stride >= rotary_dim (or heads == 1).
  // kOutOfRange naming the row if a position is negative or >= max_positions (nothing is
  // rotated then).
  Status apply(float* x, size_t row_stride, uint32_t rows, uint32_t heads, size_t head_stride,
               const int32_t* positions) const;

  uint32_t rotary_dim() const { return rotary_dim_; }
  uint32_t max_positions() const { return max_positions_; }
  RopeStyle style() const { return style_; }
  // cos / sin of angle(p, i), for tests and fused callers.
  const float* cos_row(uint32_t p) const { return cos_.data() + size_t{p} * (rotary_dim_ / 2); }
  const float* sin_row(uint32_t p) const { return sin_.data() + size_t{p} * (rotary_dim_ / 2); }

 private:
  uint32_t rotary_dim_ = 0;
  uint32_t max_positions_ = 0;
  RopeStyle style_ = RopeStyle::kHalfSplit;
  std::vector<float> cos_;  // [position][rotary_dim / 2]
  std::vector<float> sin_;
};

}  // namespace moe::models::kernels
