// Linear layers on the host through a BLAS (OpenBLAS sgemm): the functional bodies of the
// model's dense products.
//
// Convention (PyTorch's nn.Linear): a weight is [out][in] row-major, activations are
// [rows][in] row-major, and y = x W^T, [rows][out] row-major. BF16 values are uint16_t
// (interconnect/quant_int8.h).
//
// Two precisions:
//  - BF16 storage, FP32 accumulation. A DenseWeight is the FP32 working copy of a BF16
//    matrix, made once (the host's stand-in for a matrix engine that reads BF16 directly);
//    linear() is one sgemm. linear_bf16() reads the BF16 matrix itself, converting panels of
//    kBf16PanelRows output rows into a thread-local scratch: no persistent copy, extra work
//    O(out * in) per call (cheap once rows is in the tens).
//  - W8A8 INT8. An Int8Weight holds per-output-channel symmetric scales (max|w|/127) and the
//    int8 values. linear_int8() quantises each activation row per token (scale max|x|/127,
//    round half to even, ic::quantize_int8_row), computes sum_k qx*qw EXACTLY, and returns
//    y = float(double(sum) * sx * sw). Exactness at BLAS speed: the int8 values are kept as
//    FP32 and multiplied by sgemm over K-blocks of at most kInt8BlockK = 1024, so every
//    partial sum is an integer of magnitude <= 1024 * 127 * 127 < 2^24 and therefore exact
//    in FP32 whatever order the BLAS sums in; the block partials are added in double (exact
//    below 2^53). The result is bit-identical to an int64 loop followed by the same scaling.
//
// Errors: the Status-returning functions check that span sizes match the shapes
// (kInvalidArgument naming the operand and the sizes); the *_rows variants take raw pointers
// and trust the caller (for kernels that checked once).
// Thread-safety: weights are immutable after creation and may be shared by threads. The
// functions use thread-local scratch (grown, never shrunk: no allocation in steady state);
// calls from different threads are independent. OpenBLAS may use its own threads inside.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/base/status.h"

namespace moe::models {

inline constexpr uint32_t kInt8BlockK = 1024;    // see the header note: 1024*127^2 < 2^24
inline constexpr uint32_t kBf16PanelRows = 256;  // output rows converted per panel

// FP32 working copy of an [out][in] matrix.
struct DenseWeight {
  uint32_t out = 0;
  uint32_t in = 0;
  std::vector<float> values;  // out x in, row-major

  // From BF16 values (w.size() == out * in), converted exactly.
  static StatusOr<DenseWeight> from_bf16(std::span<const uint16_t> w, uint32_t out, uint32_t in);
  // From FP32 values, kept as given.
  static StatusOr<DenseWeight> from_float(std::span<const float> w, uint32_t out, uint32_t in);
};

// W8A8 weight: per output channel n, scale[n] = max_k |w[n][k]| / 127 (0 for a zero row) and
// q[n][k] = clamp(round_half_even(w / scale), -127, 127).
struct Int8Weight {
  uint32_t out = 0;
  uint32_t in = 0;
  std::vector<int8_t> q;        // out x in
  std::vector<float> scale;     // out
  std::vector<float> q_as_f32;  // q as FP32 (what sgemm reads)

  static StatusOr<Int8Weight> from_bf16(std::span<const uint16_t> w, uint32_t out, uint32_t in);
  static StatusOr<Int8Weight> from_float(std::span<const float> w, uint32_t out, uint32_t in);
};

// y[rows][w.out] = x[rows][w.in] W^T (accumulate: y += instead of y =).
Status linear(std::span<const float> x, uint32_t rows, const DenseWeight& w, std::span<float> y,
              bool accumulate = false);
// The same reading BF16 weights [out][in] directly (panel conversion, see the header note).
Status linear_bf16(std::span<const float> x, uint32_t rows, std::span<const uint16_t> w,
                   uint32_t out, uint32_t in, std::span<float> y, bool accumulate = false);
// W8A8: activations quantised per row, exact integer products, scaled (see the header note).
Status linear_int8(std::span<const float> x, uint32_t rows, const Int8Weight& w,
                   std::span<float> y, bool accumulate = false);

// Unchecked forms: x is rows x w.in, y is rows x w.out, both dense row-major.
void linear_rows(const float* x, uint32_t rows, const DenseWeight& w, float* y, bool accumulate);
void linear_int8_rows(const float* x, uint32_t rows, const Int8Weight& w, float* y,
                      bool accumulate);

// FLOPs of one linear layer (2 * rows * out * in), for benchmarks and cost functions.
inline double linear_flops(uint64_t rows, uint64_t out, uint64_t in) {
  return 2.0 * double(rows) * double(out) * double(in);
}

}  // namespace moe::models
