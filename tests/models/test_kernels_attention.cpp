// GQA attention over the KV cache: double reference, prefill == decode, causality, head
// mapping, block-addressed (paged) caches, numerical stability, refusals.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "interconnect/quant_int8.h"
#include "models/kernels/attention.h"

using namespace moe;
using namespace moe::models::kernels;

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float amplitude = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-amplitude, amplitude);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

struct Tokens {  // q, k, v of n tokens
  std::vector<float> q, k, v;
};

Tokens make_tokens(const AttentionShape& s, uint32_t n, uint32_t seed, float q_amp = 1.0f) {
  return {random_floats(size_t{n} * s.num_heads * s.head_dim, seed, q_amp),
          random_floats(size_t{n} * s.num_kv_heads * s.head_dim, seed + 1),
          random_floats(size_t{n} * s.num_kv_heads * s.head_dim, seed + 2)};
}

// Causal attention of all n tokens (positions 0..n-1) in double. K/V are first rounded as the
// cache stores them.
std::vector<double> reference(const AttentionShape& s, const Tokens& t, uint32_t n,
                              KvDtype dtype) {
  auto stored = [&](float x) {
    return dtype == KvDtype::kBf16 ? double(ic::round_to_bf16(x)) : double(x);
  };
  const uint32_t d = s.head_dim, group = s.num_heads / s.num_kv_heads;
  std::vector<double> out(size_t{n} * s.num_heads * d, 0.0);
  for (uint32_t p = 0; p < n; ++p)
    for (uint32_t h = 0; h < s.num_heads; ++h) {
      const uint32_t g = h / group;
      std::vector<double> score(p + 1);
      double m = -1e300;
      for (uint32_t j = 0; j <= p; ++j) {
        double acc = 0;
        for (uint32_t i = 0; i < d; ++i)
          acc += double(t.q[(p * s.num_heads + h) * d + i]) *
                 stored(t.k[(j * s.num_kv_heads + g) * d + i]);
        score[j] = acc / std::sqrt(double(d));
        m = std::max(m, score[j]);
      }
      double sum = 0;
      for (double& x : score) sum += (x = std::exp(x - m));
      for (uint32_t j = 0; j <= p; ++j)
        for (uint32_t i = 0; i < d; ++i)
          out[(p * s.num_heads + h) * d + i] +=
              score[j] / sum * stored(t.v[(j * s.num_kv_heads + g) * d + i]);
    }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::abs(a[i] - b[i])));
  return m;
}

const AttentionShape kShape{8, 2, 40, 0.0f};  // head_dim not a multiple of 8

}  // namespace

TEST_CASE("models.kernels: attention prefill matches a double reference (FP32 and BF16 cache)") {
  const uint32_t n = 13;
  const Tokens t = make_tokens(kShape, n, 20);
  for (KvDtype dtype : {KvDtype::kFloat32, KvDtype::kBf16}) {
    CAPTURE(int(dtype));
    StatusOr<ContiguousKvCache> cache = ContiguousKvCache::create(dtype, 2, 40, 32);
    REQUIRE(cache.ok());
    AttentionScratch scratch;
    std::vector<float> out(t.q.size());
    REQUIRE(attention_prefill(kShape, t.q.data(), t.k.data(), t.v.data(), n, cache->view(),
                              scratch, out.data())
                .ok());
    CHECK(cache->view().length == n);
    // FP32 accumulation over <= 13 positions of O(1) values: well under 1e-5.
    CHECK(max_abs_diff(out, reference(kShape, t, n, dtype)) < 1e-5);
  }
}

TEST_CASE("models.kernels: attention prefill of N tokens equals N decode steps") {
  const uint32_t n = 11;
  const Tokens t = make_tokens(kShape, n, 30);
  for (KvDtype dtype : {KvDtype::kFloat32, KvDtype::kBf16}) {
    CAPTURE(int(dtype));
    StatusOr<ContiguousKvCache> a = ContiguousKvCache::create(dtype, 2, 40, n);
    StatusOr<ContiguousKvCache> b = ContiguousKvCache::create(dtype, 2, 40, n);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    AttentionScratch scratch;
    std::vector<float> prefill(t.q.size()), decode(t.q.size());
    REQUIRE(attention_prefill(kShape, t.q.data(), t.k.data(), t.v.data(), n, a->view(), scratch,
                              prefill.data())
                .ok());
    const size_t qrow = 8 * 40, kvrow = 2 * 40;
    KvCacheView* seq[1] = {&b->view()};
    for (uint32_t i = 0; i < n; ++i)
      REQUIRE(attention_decode(kShape, &t.q[i * qrow], &t.k[i * kvrow], &t.v[i * kvrow], seq,
                               scratch, &decode[i * qrow])
                  .ok());
    CHECK(max_abs_diff(prefill, decode) < 1e-6);
    // The cache is full now: one more token is refused and nothing changes.
    std::vector<float> extra(qrow, 7.0f);
    Status s = attention_decode(kShape, t.q.data(), t.k.data(), t.v.data(), seq, scratch,
                                extra.data());
    CHECK(s.code() == StatusCode::kResourceExhausted);
    CHECK(b->view().length == n);
    CHECK(extra[0] == 7.0f);
  }
}

TEST_CASE("models.kernels: attention is causal: future tokens do not change earlier outputs") {
  const uint32_t n = 10, m = 6;
  Tokens t = make_tokens(kShape, n, 40);
  auto run = [&](const Tokens& tk, uint32_t count) {
    StatusOr<ContiguousKvCache> c = ContiguousKvCache::create(KvDtype::kFloat32, 2, 40, n);
    REQUIRE(c.ok());
    AttentionScratch scratch;
    std::vector<float> out(size_t{count} * 8 * 40);
    REQUIRE(attention_prefill(kShape, tk.q.data(), tk.k.data(), tk.v.data(), count, c->view(),
                              scratch, out.data())
                .ok());
    return out;
  };
  const std::vector<float> full = run(t, n);
  const std::vector<float> prefix = run(t, m);
  for (size_t i = 0; i < prefix.size(); ++i) CHECK(full[i] == prefix[i]);
  Tokens changed = t;  // perturb the K/V of the last tokens
  for (size_t i = m * 2 * 40; i < changed.k.size(); ++i) {
    changed.k[i] += 3.0f;
    changed.v[i] -= 5.0f;
  }
  const std::vector<float> after = run(changed, n);
  for (size_t i = 0; i < prefix.size(); ++i) CHECK(after[i] == full[i]);
  CHECK(max_abs_diff(after, full) > 0.1);  // later tokens did see the change
}

TEST_CASE("models.kernels: GQA maps query head h to KV head h / group") {
  const AttentionShape s{12, 3, 16, 0.0f};  // group of 4
  const uint32_t n = 5;
  Tokens t = make_tokens(s, n, 50);
  for (uint32_t p = 0; p < n; ++p)  // V of KV head g is the constant g + 1 at every position
    for (uint32_t g = 0; g < 3; ++g)
      for (uint32_t i = 0; i < 16; ++i) t.v[(p * 3 + g) * 16 + i] = float(g + 1);
  StatusOr<ContiguousKvCache> c = ContiguousKvCache::create(KvDtype::kFloat32, 3, 16, n);
  REQUIRE(c.ok());
  AttentionScratch scratch;
  std::vector<float> out(t.q.size());
  REQUIRE(attention_prefill(s, t.q.data(), t.k.data(), t.v.data(), n, c->view(), scratch,
                            out.data())
              .ok());
  for (uint32_t p = 0; p < n; ++p)
    for (uint32_t h = 0; h < 12; ++h)
      CHECK(out[(p * 12 + h) * 16 + 3] == doctest::Approx(h / 4 + 1).epsilon(1e-6));

  // Random K/V: the same result as multi-head attention with each KV head repeated for its
  // group (HF repeat_kv).
  const Tokens r = make_tokens(s, n, 55);
  StatusOr<ContiguousKvCache> cg = ContiguousKvCache::create(KvDtype::kFloat32, 3, 16, n);
  REQUIRE(cg.ok());
  std::vector<float> out_gqa(r.q.size());
  REQUIRE(attention_prefill(s, r.q.data(), r.k.data(), r.v.data(), n, cg->view(), scratch,
                            out_gqa.data())
              .ok());
  const AttentionShape mha{12, 12, 16, 0.0f};
  Tokens rep{r.q, std::vector<float>(n * 12 * 16), std::vector<float>(n * 12 * 16)};
  for (uint32_t p = 0; p < n; ++p)
    for (uint32_t h = 0; h < 12; ++h)
      for (uint32_t i = 0; i < 16; ++i) {
        rep.k[(p * 12 + h) * 16 + i] = r.k[(p * 3 + h / 4) * 16 + i];
        rep.v[(p * 12 + h) * 16 + i] = r.v[(p * 3 + h / 4) * 16 + i];
      }
  StatusOr<ContiguousKvCache> cm = ContiguousKvCache::create(KvDtype::kFloat32, 12, 16, n);
  REQUIRE(cm.ok());
  std::vector<float> out_mha(r.q.size());
  REQUIRE(attention_prefill(mha, rep.q.data(), rep.k.data(), rep.v.data(), n, cm->view(),
                            scratch, out_mha.data())
              .ok());
  CHECK(max_abs_diff(out_mha, out_gqa) < 1e-6);
}

TEST_CASE("models.kernels: attention over a paged cache (scattered blocks) equals contiguous") {
  const uint32_t n = 14, block = 4, blocks = 4;
  const Tokens t = make_tokens(kShape, n, 60);
  const size_t row = 2 * 40;
  std::vector<float> k_pool(blocks * block * row), v_pool(blocks * block * row);
  // Logical block b lives in physical block perm[b].
  const uint32_t perm[blocks] = {2, 0, 3, 1};
  std::vector<void*> kb(blocks), vb(blocks);
  for (uint32_t b = 0; b < blocks; ++b) {
    kb[b] = &k_pool[perm[b] * block * row];
    vb[b] = &v_pool[perm[b] * block * row];
  }
  KvCacheView paged;
  paged.dtype = KvDtype::kFloat32;
  paged.num_kv_heads = 2;
  paged.head_dim = 40;
  paged.block_positions = block;
  paged.num_blocks = blocks;
  paged.k_blocks = kb.data();
  paged.v_blocks = vb.data();
  CHECK(paged.block_of(9) == 2);
  AttentionScratch scratch;
  std::vector<float> out(t.q.size());
  // Prefill 9 tokens, then decode the rest one by one.
  REQUIRE(attention_prefill(kShape, t.q.data(), t.k.data(), t.v.data(), 9, paged, scratch,
                            out.data())
              .ok());
  KvCacheView* seq[1] = {&paged};
  for (uint32_t i = 9; i < n; ++i)
    REQUIRE(attention_decode(kShape, &t.q[i * 320], &t.k[i * row], &t.v[i * row], seq, scratch,
                             &out[i * 320])
                .ok());
  CHECK(max_abs_diff(out, reference(kShape, t, n, KvDtype::kFloat32)) < 1e-5);
  CHECK(static_cast<float*>(paged.k_row(5))[0] == t.k[5 * row]);  // block 1 -> physical 0
  CHECK(k_pool[0 * block * row + 1 * row] == t.k[5 * row]);
}

TEST_CASE("models.kernels: attention decode of many sequences of different lengths") {
  const uint32_t seqs = 4;
  const uint32_t lengths[seqs] = {1, 5, 9, 3};  // prompt tokens before the decoded one
  std::vector<ContiguousKvCache> caches;
  std::vector<Tokens> toks;
  AttentionScratch scratch;
  for (uint32_t s = 0; s < seqs; ++s) {
    caches.push_back(std::move(ContiguousKvCache::create(KvDtype::kBf16, 2, 40, 16)).value());
    toks.push_back(make_tokens(kShape, lengths[s] + 1, 70 + 10 * s));
    std::vector<float> out(size_t{lengths[s]} * 320);
    REQUIRE(attention_prefill(kShape, toks[s].q.data(), toks[s].k.data(), toks[s].v.data(),
                              lengths[s], caches[s].view(), scratch, out.data())
                .ok());
  }
  std::vector<float> q(seqs * 320), k(seqs * 80), v(seqs * 80), out(seqs * 320);
  std::vector<KvCacheView*> views;
  for (uint32_t s = 0; s < seqs; ++s) {
    std::copy_n(&toks[s].q[lengths[s] * 320], 320, &q[s * 320]);
    std::copy_n(&toks[s].k[lengths[s] * 80], 80, &k[s * 80]);
    std::copy_n(&toks[s].v[lengths[s] * 80], 80, &v[s * 80]);
    views.push_back(&caches[s].view());
  }
  REQUIRE(attention_decode(kShape, q.data(), k.data(), v.data(), views, scratch, out.data()).ok());
  for (uint32_t s = 0; s < seqs; ++s) {
    CAPTURE(s);
    const std::vector<double> ref = reference(kShape, toks[s], lengths[s] + 1, KvDtype::kBf16);
    double m = 0;
    for (uint32_t i = 0; i < 320; ++i)
      m = std::max(m, std::abs(out[s * 320 + i] - ref[lengths[s] * 320 + i]));
    CHECK(m < 1e-5);
    CHECK(caches[s].view().length == lengths[s] + 1);
  }
}

TEST_CASE("models.kernels: attention softmax is stable for large scores") {
  const uint32_t n = 7;
  const Tokens t = make_tokens(kShape, n, 80, 300.0f);  // scores in the thousands
  StatusOr<ContiguousKvCache> c = ContiguousKvCache::create(KvDtype::kFloat32, 2, 40, n);
  REQUIRE(c.ok());
  AttentionScratch scratch;
  std::vector<float> out(t.q.size());
  REQUIRE(attention_prefill(kShape, t.q.data(), t.k.data(), t.v.data(), n, c->view(), scratch,
                            out.data())
              .ok());
  for (float x : out) REQUIRE(std::isfinite(x));
  // Scores ~1e3 carry FP32 rounding of ~1e-4 into the exponent: tolerance 1e-2 on O(1) outputs.
  CHECK(max_abs_diff(out, reference(kShape, t, n, KvDtype::kFloat32)) < 1e-2);
}

TEST_CASE("models.kernels: attention refuses mismatched shapes without touching anything") {
  StatusOr<ContiguousKvCache> c = ContiguousKvCache::create(KvDtype::kFloat32, 2, 40, 8);
  REQUIRE(c.ok());
  CHECK(ContiguousKvCache::create(KvDtype::kFloat32, 0, 40, 8).status().code() ==
        StatusCode::kInvalidArgument);
  AttentionScratch scratch;
  const Tokens t = make_tokens(kShape, 9, 90);
  std::vector<float> out(t.q.size(), 1.0f);
  AttentionShape wrong_heads{8, 3, 40, 0.0f};
  CHECK(attention_prefill(wrong_heads, t.q.data(), t.k.data(), t.v.data(), 1, c->view(), scratch,
                          out.data())
            .code() == StatusCode::kInvalidArgument);
  AttentionShape wrong_dim{8, 2, 32, 0.0f};
  Status s = attention_prefill(wrong_dim, t.q.data(), t.k.data(), t.v.data(), 1, c->view(),
                               scratch, out.data());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("40") != std::string::npos);
  s = attention_prefill(kShape, t.q.data(), t.k.data(), t.v.data(), 9, c->view(), scratch,
                        out.data());
  CHECK(s.code() == StatusCode::kResourceExhausted);
  CHECK(c->view().length == 0);
  CHECK(out[0] == 1.0f);
  KvCacheView* none[1] = {nullptr};
  CHECK(attention_decode(kShape, t.q.data(), t.k.data(), t.v.data(), none, scratch, out.data())
            .code() == StatusCode::kInvalidArgument);
}
