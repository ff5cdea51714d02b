// RMSNorm and RoPE against double-precision references on seeded random data.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "interconnect/quant_int8.h"
#include "models/kernels/norm.h"
#include "models/kernels/rope.h"

using namespace moe;
using namespace moe::models::kernels;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = ic::float_to_bf16(v[i]);
  return out;
}

// Reference: one row, double.
std::vector<double> ref_norm(const float* x, const std::vector<double>& w, uint32_t dim,
                             double eps) {
  double ss = 0;
  for (uint32_t i = 0; i < dim; ++i) ss += double(x[i]) * x[i];
  const double inv = 1.0 / std::sqrt(ss / dim + eps);
  std::vector<double> out(dim);
  for (uint32_t i = 0; i < dim; ++i) out[i] = x[i] * inv * w[i];
  return out;
}

}  // namespace

TEST_CASE("models.kernels: rms_norm matches a double reference, BF16 and FP32 weights") {
  const uint32_t rows = 5, dim = 67;  // dim not a multiple of the 8-lane reduction
  const float eps = 1e-6f;
  std::vector<float> x = random_floats(rows * dim, 1);
  std::vector<uint16_t> w_bf16 = to_bf16(random_floats(dim, 2, 0.5f, 1.5f));
  std::vector<float> w_f32 = random_floats(dim, 3, 0.5f, 1.5f);
  std::vector<double> w_bf16_d(dim), w_f32_d(dim);
  for (uint32_t i = 0; i < dim; ++i) {
    w_bf16_d[i] = ic::bf16_to_float(w_bf16[i]);
    w_f32_d[i] = w_f32[i];
  }
  std::vector<float> out_b(rows * dim), out_f(rows * dim);
  rms_norm(x.data(), w_bf16.data(), rows, dim, eps, out_b.data());
  rms_norm(x.data(), w_f32.data(), rows, dim, eps, out_f.data());
  for (uint32_t r = 0; r < rows; ++r) {
    std::vector<double> rb = ref_norm(&x[r * dim], w_bf16_d, dim, eps);
    std::vector<double> rf = ref_norm(&x[r * dim], w_f32_d, dim, eps);
    for (uint32_t i = 0; i < dim; ++i) {  // tolerance: a few FP32 ulps of O(1) values
      CHECK(std::abs(out_b[r * dim + i] - rb[i]) <= 2e-6 * (1 + std::abs(rb[i])));
      CHECK(std::abs(out_f[r * dim + i] - rf[i]) <= 2e-6 * (1 + std::abs(rf[i])));
    }
  }
  std::vector<float> in_place = x;  // out == x is allowed
  rms_norm(in_place.data(), w_bf16.data(), rows, dim, eps, in_place.data());
  CHECK(in_place == out_b);
}

TEST_CASE("models.kernels: add_rms_norm updates the residual stream and normalises it") {
  const uint32_t rows = 3, dim = 130;
  std::vector<float> x = random_floats(rows * dim, 4);
  std::vector<float> res = random_floats(rows * dim, 5);
  std::vector<float> w = random_floats(dim, 6, 0.5f, 1.5f);
  std::vector<double> wd(w.begin(), w.end());
  std::vector<float> x_sum(rows * dim);
  for (size_t i = 0; i < x.size(); ++i) x_sum[i] = x[i] + res[i];

  std::vector<float> x1 = x, out(rows * dim);
  add_rms_norm(x1.data(), res.data(), w.data(), rows, dim, 1e-5f, out.data());
  CHECK(x1 == x_sum);
  for (uint32_t r = 0; r < rows; ++r) {
    std::vector<double> ref = ref_norm(&x_sum[r * dim], wd, dim, 1e-5);
    for (uint32_t i = 0; i < dim; ++i)
      CHECK(std::abs(out[r * dim + i] - ref[i]) <= 2e-6 * (1 + std::abs(ref[i])));
  }
  // out may be the residual buffer itself.
  std::vector<float> x2 = x, res2 = res;
  add_rms_norm(x2.data(), res2.data(), w.data(), rows, dim, 1e-5f, res2.data());
  CHECK(x2 == x_sum);
  CHECK(res2 == out);
}

TEST_CASE("models.kernels: per-head RMSNorm normalises each head inside a strided buffer") {
  const uint32_t rows = 4, heads = 3, head_dim = 20, stride = 70;  // 10 padding elements
  std::vector<float> x = random_floats(rows * stride, 7);
  const std::vector<float> original = x;
  std::vector<uint16_t> w = to_bf16(random_floats(head_dim, 8, 0.5f, 1.5f));
  std::vector<double> wd(head_dim);
  for (uint32_t i = 0; i < head_dim; ++i) wd[i] = ic::bf16_to_float(w[i]);
  rms_norm_heads(x.data(), stride, rows, heads, head_dim, w.data(), 1e-6f);
  for (uint32_t r = 0; r < rows; ++r) {
    for (uint32_t h = 0; h < heads; ++h) {
      std::vector<double> ref = ref_norm(&original[r * stride + h * head_dim], wd, head_dim, 1e-6);
      for (uint32_t i = 0; i < head_dim; ++i)
        CHECK(std::abs(x[r * stride + h * head_dim + i] - ref[i]) <= 2e-6 * (1 + std::abs(ref[i])));
    }
    for (uint32_t i = heads * head_dim; i < stride; ++i)  // padding untouched
      CHECK(x[r * stride + i] == original[r * stride + i]);
  }
}

namespace {

// Reference rotation of one head (double angles).
void ref_rope(std::vector<double>& v, uint32_t rotary_dim, double theta, int pos,
              RopeStyle style) {
  const uint32_t half = rotary_dim / 2;
  for (uint32_t i = 0; i < half; ++i) {
    const double angle = pos * std::pow(theta, -2.0 * i / rotary_dim);
    const uint32_t ia = style == RopeStyle::kHalfSplit ? i : 2 * i;
    const uint32_t ib = style == RopeStyle::kHalfSplit ? i + half : 2 * i + 1;
    const double a = v[ia], b = v[ib];
    v[ia] = a * std::cos(angle) - b * std::sin(angle);
    v[ib] = b * std::cos(angle) + a * std::sin(angle);
  }
}

}  // namespace

TEST_CASE("models.kernels: rope matches a double reference in both styles, partial rotary") {
  const uint32_t rows = 6, heads = 3, head_dim = 48, rotary = 32, stride = heads * head_dim + 5;
  const double theta = 1e6;
  const int32_t positions[rows] = {0, 1, 17, 511, 2047, 4095};
  for (RopeStyle style : {RopeStyle::kHalfSplit, RopeStyle::kInterleaved}) {
    CAPTURE(int(style));
    StatusOr<RopeTable> table = RopeTable::create(rotary, theta, 4096, style);
    REQUIRE(table.ok());
    std::vector<float> x = random_floats(rows * stride, 9);
    const std::vector<float> original = x;
    REQUIRE(table->apply(x.data(), stride, rows, heads, head_dim, positions).ok());
    for (uint32_t r = 0; r < rows; ++r) {
      for (uint32_t h = 0; h < heads; ++h) {
        const size_t off = r * stride + h * head_dim;
        std::vector<double> ref(original.begin() + off, original.begin() + off + head_dim);
        ref_rope(ref, rotary, theta, positions[r], style);
        for (uint32_t i = 0; i < head_dim; ++i)  // FP32 cos/sin table: ~1e-7 relative each
          CHECK(std::abs(x[off + i] - ref[i]) <= 2e-6 * (1 + std::abs(ref[i])));
      }
      for (uint32_t i = heads * head_dim; i < stride; ++i) CHECK(x[r * stride + i] == original[r * stride + i]);
    }
  }
}

TEST_CASE("models.kernels: rope makes q.k depend on the relative position only") {
  const uint32_t dim = 64;
  StatusOr<RopeTable> table = RopeTable::create(dim, 10000.0, 8192, RopeStyle::kHalfSplit);
  REQUIRE(table.ok());
  const std::vector<float> q0 = random_floats(dim, 10), k0 = random_floats(dim, 11);
  auto rotated_dot = [&](int32_t pq, int32_t pk) {
    std::vector<float> q = q0, k = k0;
    REQUIRE(table->apply(q.data(), dim, 1, 1, dim, &pq).ok());
    REQUIRE(table->apply(k.data(), dim, 1, 1, dim, &pk).ok());
    double s = 0;
    for (uint32_t i = 0; i < dim; ++i) s += double(q[i]) * k[i];
    return s;
  };
  for (int32_t delta : {0, 1, 7, 300}) {
    CAPTURE(delta);
    const double base = rotated_dot(delta, 0);
    for (int32_t p : {5, 123, 4000, 8000 - delta})
      CHECK(std::abs(rotated_dot(p + delta, p) - base) <= 1e-4 * (1 + std::abs(base)));
  }
  // The score does change with the relative position (the rotation is not the identity).
  CHECK(std::abs(rotated_dot(1, 0) - rotated_dot(0, 0)) > 1e-3);
}

TEST_CASE("models.kernels: interleaved rope equals half-split rope on de-interleaved data") {
  const uint32_t dim = 16, half = dim / 2;
  StatusOr<RopeTable> inter = RopeTable::create(dim, 10000.0, 64, RopeStyle::kInterleaved);
  StatusOr<RopeTable> split = RopeTable::create(dim, 10000.0, 64, RopeStyle::kHalfSplit);
  REQUIRE(inter.ok());
  REQUIRE(split.ok());
  std::vector<float> a = random_floats(dim, 12), b(dim);
  for (uint32_t i = 0; i < half; ++i) {
    b[i] = a[2 * i];
    b[i + half] = a[2 * i + 1];
  }
  const int32_t pos = 37;
  REQUIRE(inter->apply(a.data(), dim, 1, 1, dim, &pos).ok());
  REQUIRE(split->apply(b.data(), dim, 1, 1, dim, &pos).ok());
  for (uint32_t i = 0; i < half; ++i) {
    CHECK(a[2 * i] == b[i]);
    CHECK(a[2 * i + 1] == b[i + half]);
  }
}

TEST_CASE("models.kernels: rope refuses bad tables and positions and leaves data untouched") {
  CHECK(RopeTable::create(0, 10000.0, 16, RopeStyle::kHalfSplit).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(RopeTable::create(7, 10000.0, 16, RopeStyle::kHalfSplit).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(RopeTable::create(8, 0.5, 16, RopeStyle::kHalfSplit).status().code() ==
        StatusCode::kInvalidArgument);
  StatusOr<RopeTable> t = RopeTable::create(8, 10000.0, 16, RopeStyle::kHalfSplit);
  REQUIRE(t.ok());
  std::vector<float> x = random_floats(16, 13);
  const std::vector<float> original = x;
  const int32_t positions[2] = {3, 16};
  Status s = t->apply(x.data(), 8, 2, 1, 8, positions);
  CHECK(s.code() == StatusCode::kOutOfRange);
  CHECK(s.message().find("row 1") != std::string::npos);
  CHECK(x == original);
  const int32_t negative[1] = {-1};
  CHECK(t->apply(x.data(), 8, 1, 1, 8, negative).code() == StatusCode::kOutOfRange);
}
