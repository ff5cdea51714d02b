// Multi-head latent attention: absorbed == naive == a double reference that decompresses
// K and V explicitly; prefill == decode; paged latent cache; refusals.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "interconnect/quant_int8.h"
#include "models/kernels/mla.h"

using namespace moe;
using namespace moe::models::kernels;

namespace {

const MlaAttentionShape kShape{4, 32, 16, 8, 12, 0.0f};  // heads, rank, nope, rope, v
constexpr uint32_t kQd = 16 + 8, kRow = 32 + 8, kKvB = 4 * (16 + 12) * 32;

std::vector<float> random_floats(size_t n, uint32_t seed, float amplitude = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-amplitude, amplitude);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<uint16_t> random_bf16(size_t n, uint32_t seed, float amplitude) {
  std::vector<float> f = random_floats(n, seed, amplitude);
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = ic::float_to_bf16(f[i]);
  return out;
}

// Causal MLA over positions 0..n-1 in double, with K and V decompressed per head.
std::vector<double> reference(const std::vector<uint16_t>& kv_b, const std::vector<float>& q,
                              const std::vector<float>& rows, uint32_t n) {
  const uint32_t H = 4, r = 32, dn = 16, dr = 8, dv = 12;
  auto w = [&](uint32_t out_row, uint32_t in) {
    return double(ic::bf16_to_float(kv_b[size_t{out_row} * r + in]));
  };
  std::vector<double> out(size_t{n} * H * dv, 0.0);
  const double scale = 1.0 / std::sqrt(double(dn + dr));
  for (uint32_t h = 0; h < H; ++h) {
    std::vector<double> k(size_t{n} * (dn + dr)), v(size_t{n} * dv);
    for (uint32_t j = 0; j < n; ++j) {
      const float* c = &rows[j * kRow];
      for (uint32_t i = 0; i < dn; ++i) {
        double a = 0;
        for (uint32_t x = 0; x < r; ++x) a += w(h * (dn + dv) + i, x) * c[x];
        k[j * (dn + dr) + i] = a;
      }
      for (uint32_t i = 0; i < dr; ++i) k[j * (dn + dr) + dn + i] = c[r + i];
      for (uint32_t i = 0; i < dv; ++i) {
        double a = 0;
        for (uint32_t x = 0; x < r; ++x) a += w(h * (dn + dv) + dn + i, x) * c[x];
        v[j * dv + i] = a;
      }
    }
    for (uint32_t p = 0; p < n; ++p) {
      std::vector<double> s(p + 1);
      double m = -1e300, sum = 0;
      for (uint32_t j = 0; j <= p; ++j) {
        double a = 0;
        for (uint32_t i = 0; i < dn + dr; ++i) a += double(q[(p * H + h) * kQd + i]) * k[j * kQd + i];
        s[j] = a * scale;
        m = std::max(m, s[j]);
      }
      for (double& x : s) sum += (x = std::exp(x - m));
      for (uint32_t j = 0; j <= p; ++j)
        for (uint32_t i = 0; i < dv; ++i) out[(p * H + h) * dv + i] += s[j] / sum * v[j * dv + i];
    }
  }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST_CASE("models.kernels: MLA absorbed and naive forms agree with a double reference") {
  const uint32_t n = 12, prompt = 9;
  const std::vector<uint16_t> kv_b = random_bf16(kKvB, 100, 0.3f);
  const std::vector<float> q = random_floats(size_t{n} * 4 * kQd, 101);
  const std::vector<float> rows = random_floats(size_t{n} * kRow, 102);
  StatusOr<MlaWeights> w = MlaWeights::create(kShape, kv_b);
  REQUIRE(w.ok());
  const std::vector<double> ref = reference(kv_b, q, rows, n);
  std::vector<std::vector<float>> outs;
  for (MlaForm form : {MlaForm::kAbsorbed, MlaForm::kNaive}) {
    CAPTURE(int(form));
    StatusOr<ContiguousMlaCache> cache = ContiguousMlaCache::create(32, 8, 16);
    REQUIRE(cache.ok());
    MlaScratch scratch;
    std::vector<float> out(size_t{n} * 4 * 12);
    // Prefill `prompt` tokens, then decode the rest one at a time.
    REQUIRE(mla_attention(*w, q.data(), rows.data(), prompt, cache->view(), form, scratch,
                          out.data())
                .ok());
    for (uint32_t t = prompt; t < n; ++t) {
      MlaCacheView* seq[1] = {&cache->view()};
      REQUIRE(mla_decode(*w, &q[t * 4 * kQd], &rows[t * kRow], seq, form, scratch,
                         &out[t * 4 * 12])
                  .ok());
    }
    CHECK(cache->view().length == n);
    // FP32 products of length <= 32 and O(1) values: 1e-5 absolute.
    CHECK(max_abs_diff(out, ref) < 1e-5);
    outs.push_back(out);
  }
  double m = 0;
  for (size_t i = 0; i < outs[0].size(); ++i) m = std::max(m, double(std::abs(outs[0][i] - outs[1][i])));
  CHECK(m < 1e-5);
}

TEST_CASE("models.kernels: MLA decode of several sequences over paged latent caches") {
  const std::vector<uint16_t> kv_b = random_bf16(kKvB, 110, 0.3f);
  StatusOr<MlaWeights> w = MlaWeights::create(kShape, kv_b);
  REQUIRE(w.ok());
  const uint32_t lengths[3] = {2, 7, 4}, block = 3, blocks = 3;
  std::vector<std::vector<float>> pools, qs, rows;
  std::vector<std::vector<float*>> tables(3);
  std::vector<MlaCacheView> views(3);
  MlaScratch scratch;
  for (uint32_t s = 0; s < 3; ++s) {
    pools.push_back(std::vector<float>(block * blocks * kRow));
    qs.push_back(random_floats(size_t{lengths[s] + 1} * 4 * kQd, 111 + s));
    rows.push_back(random_floats(size_t{lengths[s] + 1} * kRow, 121 + s));
    for (uint32_t b = 0; b < blocks; ++b)  // reversed physical order
      tables[s].push_back(&pools[s][(blocks - 1 - b) * block * kRow]);
    views[s] = MlaCacheView{32, 8, block, blocks, tables[s].data(), 0};
    std::vector<float> out(size_t{lengths[s]} * 4 * 12);
    REQUIRE(mla_attention(*w, qs[s].data(), rows[s].data(), lengths[s], views[s],
                          MlaForm::kAbsorbed, scratch, out.data())
                .ok());
  }
  std::vector<float> q(3 * 4 * kQd), kv(3 * kRow), out(3 * 4 * 12);
  std::vector<MlaCacheView*> ptrs;
  for (uint32_t s = 0; s < 3; ++s) {
    std::copy_n(&qs[s][lengths[s] * 4 * kQd], 4 * kQd, &q[s * 4 * kQd]);
    std::copy_n(&rows[s][lengths[s] * kRow], kRow, &kv[s * kRow]);
    ptrs.push_back(&views[s]);
  }
  REQUIRE(mla_decode(*w, q.data(), kv.data(), ptrs, MlaForm::kAbsorbed, scratch, out.data()).ok());
  for (uint32_t s = 0; s < 3; ++s) {
    CAPTURE(s);
    const std::vector<double> ref = reference(kv_b, qs[s], rows[s], lengths[s] + 1);
    double m = 0;
    for (uint32_t i = 0; i < 48; ++i) m = std::max(m, std::abs(out[s * 48 + i] - ref[lengths[s] * 48 + i]));
    CHECK(m < 1e-5);
  }
}

TEST_CASE("models.kernels: MLA refuses a mis-sized kv_b_proj and a full or mismatched cache") {
  std::vector<uint16_t> kv_b = random_bf16(kKvB - 1, 130, 0.3f);
  Status s = MlaWeights::create(kShape, kv_b).status();
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find(std::to_string(kKvB)) != std::string::npos);
  MlaAttentionShape zero = kShape;
  zero.v_head_dim = 0;
  CHECK(MlaWeights::create(zero, kv_b).status().code() == StatusCode::kInvalidArgument);

  kv_b.push_back(0);
  StatusOr<MlaWeights> w = MlaWeights::create(kShape, kv_b);
  REQUIRE(w.ok());
  StatusOr<ContiguousMlaCache> cache = ContiguousMlaCache::create(32, 8, 2);
  REQUIRE(cache.ok());
  const std::vector<float> q = random_floats(3 * 4 * kQd, 131), rows = random_floats(3 * kRow, 132);
  std::vector<float> out(3 * 48, -1.0f);
  MlaScratch scratch;
  CHECK(mla_attention(*w, q.data(), rows.data(), 3, cache->view(), MlaForm::kAbsorbed, scratch,
                      out.data())
            .code() == StatusCode::kResourceExhausted);
  CHECK(cache->view().length == 0);
  CHECK(out[0] == -1.0f);
  StatusOr<ContiguousMlaCache> wrong = ContiguousMlaCache::create(16, 8, 4);
  REQUIRE(wrong.ok());
  CHECK(mla_attention(*w, q.data(), rows.data(), 1, wrong->view(), MlaForm::kNaive, scratch,
                      out.data())
            .code() == StatusCode::kInvalidArgument);
}
