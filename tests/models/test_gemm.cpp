// Linear layers: BF16-storage products against a double reference, the panel-converting BF16
// path against the FP32 working copy, and W8A8 INT8 products bit-identical to an int64 loop
// (including K far past the 2^24 bound of one FP32 block).
#include <doctest/doctest.h>

#include <cmath>

#include "models/kernels/gemm.h"
#include "tests/models/moe_test_util.h"

using namespace modeltest;

namespace {

// |y - ref| <= 1e-5 * sum_k |x_k w_k| + 1e-7 per element, reference in double.
int check_linear(std::span<const float> x, uint32_t rows, std::span<const float> w, uint32_t out,
                 uint32_t in, std::span<const float> y, std::span<const float> y0) {
  int bad = 0;
  for (uint32_t m = 0; m < rows; ++m)
    for (uint32_t n = 0; n < out; ++n) {
      double ref = y0.empty() ? 0.0 : y0[uint64_t{m} * out + n], mag = std::fabs(ref);
      for (uint32_t k = 0; k < in; ++k) {
        const double p = double(x[uint64_t{m} * in + k]) * w[uint64_t{n} * in + k];
        ref += p;
        mag += std::fabs(p);
      }
      const double got = y[uint64_t{m} * out + n];
      if (!(std::fabs(got - ref) <= 1e-5 * mag + 1e-7) && ++bad <= 5)
        FAIL_CHECK("row " << m << " col " << n << ": " << got << " vs " << ref);
    }
  return bad;
}

// The INT8 reference: the same quantisation, products summed in int64, the same scaling.
std::vector<float> int8_reference(std::span<const float> x, uint32_t rows, const Int8Weight& w) {
  std::vector<float> y(uint64_t{rows} * w.out);
  std::vector<int8_t> qx(w.in);
  for (uint32_t m = 0; m < rows; ++m) {
    const float sx = ic::quantize_int8_row(x.subspan(uint64_t{m} * w.in, w.in), qx);
    for (uint32_t n = 0; n < w.out; ++n) {
      int64_t sum = 0;
      for (uint32_t k = 0; k < w.in; ++k) sum += int64_t{qx[k]} * w.q[uint64_t{n} * w.in + k];
      y[uint64_t{m} * w.out + n] = static_cast<float>(double(sum) * double(sx) * double(w.scale[n]));
    }
  }
  return y;
}

}  // namespace

TEST_CASE("models.gemm: BF16 linear equals a double reference, with and without accumulate") {
  Rng rng(3);
  for (auto [rows, out, in] : {std::array<uint32_t, 3>{1, 7, 5}, {37, 96, 130}, {64, 300, 257}}) {
    CAPTURE(rows);
    CAPTURE(out);
    CAPTURE(in);
    const auto wb = random_bf16(rng, uint64_t{out} * in, 1.0f);
    const auto x = random_bf16_floats(rng, uint64_t{rows} * in, 2.0f);
    auto w = DenseWeight::from_bf16(wb, out, in);
    REQUIRE(w.ok());
    std::vector<float> y(uint64_t{rows} * out, 0.0f);
    REQUIRE(linear(x, rows, *w, y).ok());
    CHECK(check_linear(x, rows, w->values, out, in, y, {}) == 0);
    const std::vector<float> y0 = y;
    REQUIRE(linear(x, rows, *w, y, /*accumulate=*/true).ok());
    CHECK(check_linear(x, rows, w->values, out, in, y, y0) == 0);
    // The BF16-direct path (panels of 256 output rows) gives the same products.
    std::vector<float> yb(y.size(), 0.0f);
    REQUIRE(linear_bf16(x, rows, wb, out, in, yb).ok());
    CHECK(check_linear(x, rows, w->values, out, in, yb, {}) == 0);
  }
}

TEST_CASE("models.gemm: INT8 weights have per-channel scales max|w|/127 and round to nearest") {
  Rng rng(5);
  const uint32_t out = 9, in = 33;
  std::vector<float> w(uint64_t{out} * in);
  for (auto& v : w) v = rng.uniform(3.0f);
  for (uint32_t k = 0; k < in; ++k) w[4 * in + k] = 0.0f;  // a zero channel
  auto q = Int8Weight::from_float(w, out, in);
  REQUIRE(q.ok());
  for (uint32_t n = 0; n < out; ++n) {
    float mx = 0;
    for (uint32_t k = 0; k < in; ++k) mx = std::max(mx, std::fabs(w[n * in + k]));
    CHECK(q->scale[n] == doctest::Approx(mx / 127.0f).epsilon(1e-6));
    for (uint32_t k = 0; k < in; ++k) {
      const int8_t v = q->q[n * in + k];
      CHECK(v >= -127);
      CHECK(q->q_as_f32[n * in + k] == float(v));
      if (mx > 0) CHECK(std::fabs(v * q->scale[n] - w[n * in + k]) <= q->scale[n] * 0.5001f);
    }
  }
  CHECK(q->scale[4] == 0.0f);
}

TEST_CASE("models.gemm: W8A8 INT8 products are exact integer sums (K up to 3000) times scales") {
  Rng rng(7);
  for (auto [rows, out, in] :
       {std::array<uint32_t, 3>{5, 17, 100}, {33, 40, 1024}, {12, 29, 1025}, {9, 23, 3000}}) {
    CAPTURE(in);
    const auto w = random_bf16(rng, uint64_t{out} * in, 0.5f);
    const auto x = random_bf16_floats(rng, uint64_t{rows} * in, 4.0f);
    auto q = Int8Weight::from_bf16(w, out, in);
    REQUIRE(q.ok());
    std::vector<float> y(uint64_t{rows} * out);
    REQUIRE(linear_int8(x, rows, *q, y).ok());
    const auto ref = int8_reference(x, rows, *q);
    int mismatches = 0;
    for (size_t i = 0; i < y.size(); ++i) mismatches += y[i] != ref[i];
    CHECK(mismatches == 0);
  }
  // Worst case for FP32: every product 127 * 127, K = 3000: the sum 48,387,000 is past 2^24,
  // so only the K-blocking keeps it exact.
  const uint32_t K = 3000;
  std::vector<float> ones(K, 1.0f), wv(2 * K, -1.0f);
  auto q = Int8Weight::from_float(wv, 2, K);
  REQUIRE(q.ok());
  std::vector<float> y(2);
  REQUIRE(linear_int8(ones, 1, *q, y).ok());
  const double exact = -double(K) * 127 * 127 * (1.0 / 127) * (1.0 / 127);
  CHECK(y[0] == static_cast<float>(-48387000.0 * double(1.0f / 127) * double(1.0f / 127)));
  CHECK(y[0] == doctest::Approx(exact).epsilon(1e-6));
  // Accumulate adds onto y.
  REQUIRE(linear_int8(ones, 1, *q, y, true).ok());
  CHECK(y[1] == doctest::Approx(2 * exact).epsilon(1e-6));
}

TEST_CASE("models.gemm: mismatched sizes are refused with the shapes named") {
  std::vector<uint16_t> wb(12);
  CHECK(DenseWeight::from_bf16(wb, 3, 5).status().code() == StatusCode::kInvalidArgument);
  CHECK(DenseWeight::from_bf16(wb, 0, 12).status().code() == StatusCode::kInvalidArgument);
  auto w = DenseWeight::from_bf16(wb, 3, 4);
  REQUIRE(w.ok());
  std::vector<float> x(8), y(5);
  Status s = linear(x, 2, *w, y);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("linear: y") != std::string::npos);
  CHECK(linear_bf16(x, 2, wb, 4, 3, y).code() == StatusCode::kInvalidArgument);
  auto q = Int8Weight::from_bf16(wb, 3, 4);
  REQUIRE(q.ok());
  CHECK(linear_int8(std::span<const float>(x).first(7), 2, *q, std::span<float>(y).first(6)).code() ==
        StatusCode::kInvalidArgument);
}
