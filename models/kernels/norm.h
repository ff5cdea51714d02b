// RMSNorm, plain, fused with a residual add, and per head (Qwen3's qk-norm).
//
//   out[r][i] = x[r][i] / sqrt(mean_i(x[r][i]^2) + eps) * weight[i]
//
// Layouts: row-major, `rows` rows of `dim` FP32 values, one after the other unless a row
// stride is given (in elements). The weight is `dim` values, BF16 (uint16_t, the checkpoint
// format) or FP32. All arithmetic is FP32 (HF computes the norm in FP32 too; it then casts to
// the activation dtype before the weight multiply, which this FP32 engine does not).
//
// Pure functions on caller memory: no allocation, thread-safe for disjoint outputs.
// Preconditions (checked with MOE_ASSERT: shape errors are bugs of the caller's code, not
// data): dim > 0, pointers valid for the extents named, eps > 0.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe::models::kernels {

// out = rmsnorm(x). `out` may equal `x` (in place); partial overlap is not allowed.
void rms_norm(const float* x, const uint16_t* weight_bf16, uint32_t rows, uint32_t dim,
              float eps, float* out);
void rms_norm(const float* x, const float* weight, uint32_t rows, uint32_t dim, float eps,
              float* out);

// The pre-norm residual step of a transformer block:
//   x += residual;  out = rmsnorm(x)
// `x` is the residual stream (updated in place), `residual` the sub-layer output. `out` must
// not overlap `x`; it may equal `residual` (each row of residual is consumed before its
// output row is written).
void add_rms_norm(float* x, const float* residual, const uint16_t* weight_bf16, uint32_t rows,
                  uint32_t dim, float eps, float* out);
void add_rms_norm(float* x, const float* residual, const float* weight, uint32_t rows,
                  uint32_t dim, float eps, float* out);

// Per-head RMSNorm in place (Qwen3 q_norm / k_norm): for each of `rows` tokens, starting at
// x + r * row_stride, `heads` heads of `head_dim` values each (head h at offset
// h * head_dim) are normalised independently with the same `head_dim` weights.
// row_stride >= heads * head_dim (lets q and k be normalised inside a fused qkv buffer).
void rms_norm_heads(float* x, size_t row_stride, uint32_t rows, uint32_t heads,
                    uint32_t head_dim, const uint16_t* weight_bf16, float eps);
void rms_norm_heads(float* x, size_t row_stride, uint32_t rows, uint32_t heads,
                    uint32_t head_dim, const float* weight, float eps);

// Sum of squares of n floats, FP32 with 8 independent partial sums (vectorisable without
// -ffast-math). Shared with the other kernels.
float sum_squares(const float* x, uint32_t n);
// Dot product of n floats, same scheme.
float dot(const float* a, const float* b, uint32_t n);

}  // namespace moe::models::kernels
