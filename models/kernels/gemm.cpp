// Linear layers through OpenBLAS (see gemm.h for the contracts and the INT8 exactness
// argument).
//
// Design notes:
//  - Every product is one or a few cblas_sgemm calls with row-major x and a transposed
//    [out][in] weight (CblasTrans), so no weight is ever transposed in memory.
//  - Scratch (BF16 panels, quantised activations, INT8 block partials) is thread-local and
//    only grows: a steady state of equal shapes allocates nothing.
//  - INT8: activations are quantised by ic::quantize_int8_row (the same rounding dispatch
//    uses), stored as FP32 integers. With K <= kInt8BlockK one sgemm gives the exact integer
//    sums; above it, each block's exact partial is added into a double accumulator.
#include "models/kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "interconnect/quant_int8.h"
#include "models/kernels/norm.h"
#include "runtime/base/check.h"

namespace moe::models {
namespace {

struct Scratch {
  std::vector<float> panel;   // BF16 panel as FP32
  std::vector<float> qx;      // quantised activations as FP32
  std::vector<float> sx;      // per-row activation scales
  std::vector<int8_t> qrow;   // one quantised row
  std::vector<float> part;    // one K-block's partial sums
  std::vector<double> acc;    // block partials summed
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

template <typename T>
T* grow(std::vector<T>& v, uint64_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

Status check_shape(const char* what, uint64_t got, uint64_t want, uint32_t a, uint32_t b) {
  if (got == want) return ok_status();
  return make_error(StatusCode::kInvalidArgument,
                    "%s: %llu elements given, shape %u x %u needs %llu", what,
                    static_cast<unsigned long long>(got), a, b,
                    static_cast<unsigned long long>(want));
}

Status check_dims(const char* what, uint32_t out, uint32_t in) {
  if (out > 0 && in > 0) return ok_status();
  return make_error(StatusCode::kInvalidArgument, "%s: empty shape %u x %u", what, out, in);
}

// y (rows x n, ldy) = x (rows x k, ldx) * w^T (w: n x k, ldw), beta 0 or 1.
void sgemm_nt(const float* x, int ldx, const float* w, int ldw, float* y, int ldy, uint32_t rows,
              uint32_t n, uint32_t k, float beta) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
              static_cast<int>(n), static_cast<int>(k), 1.0f, x, ldx, w, ldw, beta, y, ldy);
}

}  // namespace

StatusOr<DenseWeight> DenseWeight::from_bf16(std::span<const uint16_t> w, uint32_t out,
                                             uint32_t in) {
  MOE_TRY(check_dims("DenseWeight", out, in));
  MOE_TRY(check_shape("DenseWeight (bf16)", w.size(), uint64_t{out} * in, out, in));
  DenseWeight d;
  d.out = out;
  d.in = in;
  d.values.resize(w.size());
  for (size_t i = 0; i < w.size(); ++i) d.values[i] = ic::bf16_to_float(w[i]);
  return d;
}

StatusOr<DenseWeight> DenseWeight::from_float(std::span<const float> w, uint32_t out,
                                              uint32_t in) {
  MOE_TRY(check_dims("DenseWeight", out, in));
  MOE_TRY(check_shape("DenseWeight (f32)", w.size(), uint64_t{out} * in, out, in));
  DenseWeight d;
  d.out = out;
  d.in = in;
  d.values.assign(w.begin(), w.end());
  return d;
}

StatusOr<Int8Weight> Int8Weight::from_float(std::span<const float> w, uint32_t out, uint32_t in) {
  MOE_TRY(check_dims("Int8Weight", out, in));
  MOE_TRY(check_shape("Int8Weight (f32)", w.size(), uint64_t{out} * in, out, in));
  Int8Weight q;
  q.out = out;
  q.in = in;
  q.q.resize(w.size());
  q.scale.resize(out);
  q.q_as_f32.resize(w.size());
  for (uint32_t n = 0; n < out; ++n) {
    const uint64_t base = uint64_t{n} * in;
    q.scale[n] = ic::quantize_int8_row(w.subspan(base, in), std::span(q.q).subspan(base, in));
  }
  for (size_t i = 0; i < q.q.size(); ++i) q.q_as_f32[i] = q.q[i];
  return q;
}

StatusOr<Int8Weight> Int8Weight::from_bf16(std::span<const uint16_t> w, uint32_t out,
                                           uint32_t in) {
  MOE_TRY(check_shape("Int8Weight (bf16)", w.size(), uint64_t{out} * in, out, in));
  std::vector<float> f(w.size());
  for (size_t i = 0; i < w.size(); ++i) f[i] = ic::bf16_to_float(w[i]);
  return from_float(f, out, in);
}

// ---- few rows (decode): dot products, no packing ----
// A BLAS packs the whole weight for every call, which costs more than the product itself when
// x has a handful of rows. Up to kSmallRows rows, each output is one dot product (FP32, eight
// partial sums: models/kernels/norm.h), so a row's result does not depend on how many rows
// share the call.
namespace {

constexpr uint32_t kSmallRows = 4;

inline void small_rows(const float* x, uint32_t rows, const float* wrow, uint32_t in, uint32_t o,
                       uint32_t out, float* y, bool accumulate) {
  for (uint32_t r = 0; r < rows; ++r) {
    const float d = kernels::dot(x + uint64_t{r} * in, wrow, in);
    float& dst = y[uint64_t{r} * out + o];
    dst = accumulate ? dst + d : d;
  }
}

// BF16 -> FP32 of n values: a shift, written so the compiler vectorises it.
inline void widen_bf16(const uint16_t* src, uint64_t n, float* dst) {
  for (uint64_t i = 0; i < n; ++i) {
    const uint32_t bits = uint32_t{src[i]} << 16;
    std::memcpy(dst + i, &bits, sizeof(float));
  }
}

}  // namespace

void linear_rows(const float* x, uint32_t rows, const DenseWeight& w, float* y, bool accumulate) {
  if (rows == 0) return;
  if (rows <= kSmallRows) {
    for (uint32_t o = 0; o < w.out; ++o)
      small_rows(x, rows, w.values.data() + uint64_t{o} * w.in, w.in, o, w.out, y, accumulate);
    return;
  }
  sgemm_nt(x, w.in, w.values.data(), w.in, y, w.out, rows, w.out, w.in, accumulate ? 1.0f : 0.0f);
}

void linear_int8_rows(const float* x, uint32_t rows, const Int8Weight& w, float* y,
                      bool accumulate) {
  if (rows == 0) return;
  const uint32_t K = w.in, N = w.out;
  Scratch& s = scratch();
  float* qx = grow(s.qx, uint64_t{rows} * K);
  float* sx = grow(s.sx, rows);
  int8_t* qrow = grow(s.qrow, K);
  for (uint32_t m = 0; m < rows; ++m) {
    sx[m] = ic::quantize_int8_row(std::span(x + uint64_t{m} * K, K), std::span(qrow, K));
    float* dst = qx + uint64_t{m} * K;
    for (uint32_t k = 0; k < K; ++k) dst[k] = qrow[k];
  }
  float* part = grow(s.part, uint64_t{rows} * N);
  const uint32_t blocks = (K + kInt8BlockK - 1) / kInt8BlockK;
  double* acc = blocks > 1 ? grow(s.acc, uint64_t{rows} * N) : nullptr;
  for (uint32_t b = 0; b < blocks; ++b) {
    const uint32_t k0 = b * kInt8BlockK, kn = std::min(kInt8BlockK, K - k0);
    sgemm_nt(qx + k0, K, w.q_as_f32.data() + k0, K, part, N, rows, N, kn, 0.0f);
    if (acc == nullptr) break;
    for (uint64_t i = 0; i < uint64_t{rows} * N; ++i) acc[i] = (b == 0 ? 0.0 : acc[i]) + part[i];
  }
  for (uint32_t m = 0; m < rows; ++m) {
    const double smx = sx[m];
    float* yr = y + uint64_t{m} * N;
    for (uint32_t n = 0; n < N; ++n) {
      const double sum = acc != nullptr ? acc[uint64_t{m} * N + n] : part[uint64_t{m} * N + n];
      const float v = static_cast<float>(sum * smx * double(w.scale[n]));
      yr[n] = accumulate ? yr[n] + v : v;
    }
  }
}

Status linear(std::span<const float> x, uint32_t rows, const DenseWeight& w, std::span<float> y,
              bool accumulate) {
  MOE_TRY(check_shape("linear: x", x.size(), uint64_t{rows} * w.in, rows, w.in));
  MOE_TRY(check_shape("linear: y", y.size(), uint64_t{rows} * w.out, rows, w.out));
  linear_rows(x.data(), rows, w, y.data(), accumulate);
  return ok_status();
}

Status linear_bf16(std::span<const float> x, uint32_t rows, std::span<const uint16_t> w,
                   uint32_t out, uint32_t in, std::span<float> y, bool accumulate) {
  MOE_TRY(check_dims("linear_bf16", out, in));
  MOE_TRY(check_shape("linear_bf16: w", w.size(), uint64_t{out} * in, out, in));
  MOE_TRY(check_shape("linear_bf16: x", x.size(), uint64_t{rows} * in, rows, in));
  MOE_TRY(check_shape("linear_bf16: y", y.size(), uint64_t{rows} * out, rows, out));
  if (rows == 0) return ok_status();
  float* panel = grow(scratch().panel, uint64_t{kBf16PanelRows} * in);
  if (rows <= kSmallRows) {
    for (uint32_t o = 0; o < out; ++o) {
      widen_bf16(w.data() + uint64_t{o} * in, in, panel);
      small_rows(x.data(), rows, panel, in, o, out, y.data(), accumulate);
    }
    return ok_status();
  }
  for (uint32_t n0 = 0; n0 < out; n0 += kBf16PanelRows) {
    const uint32_t nn = std::min(kBf16PanelRows, out - n0);
    const uint16_t* src = w.data() + uint64_t{n0} * in;
    widen_bf16(src, uint64_t{nn} * in, panel);
    sgemm_nt(x.data(), in, panel, in, y.data() + n0, out, rows, nn, in, accumulate ? 1.0f : 0.0f);
  }
  return ok_status();
}

Status linear_int8(std::span<const float> x, uint32_t rows, const Int8Weight& w,
                   std::span<float> y, bool accumulate) {
  MOE_TRY(check_shape("linear_int8: x", x.size(), uint64_t{rows} * w.in, rows, w.in));
  MOE_TRY(check_shape("linear_int8: y", y.size(), uint64_t{rows} * w.out, rows, w.out));
  linear_int8_rows(x.data(), rows, w, y.data(), accumulate);
  return ok_status();
}

}  // namespace moe::models
