// Sampling (greedy, temperature, top-p, seeded) and embedding lookup.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "interconnect/quant_int8.h"
#include "models/kernels/embedding.h"
#include "models/kernels/sampling.h"

using namespace moe;
using namespace moe::models::kernels;

namespace {

std::vector<float> random_logits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Probabilities at a temperature, in double.
std::vector<double> probabilities(const std::vector<float>& logits, double temperature) {
  const double m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) sum += (p[i] = std::exp((logits[i] - m) / temperature));
  for (double& x : p) x /= sum;
  return p;
}

// The nucleus: fewest most probable tokens reaching top_p.
std::set<uint32_t> nucleus(const std::vector<double>& p, double top_p) {
  std::vector<uint32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return p[a] > p[b]; });
  std::set<uint32_t> out;
  double cum = 0;
  for (uint32_t t : order) {
    out.insert(t);
    if ((cum += p[t]) >= top_p) break;
  }
  return out;
}

}  // namespace

TEST_CASE("models.kernels: greedy sampling picks the argmax, the lowest id among ties") {
  SamplingScratch scratch;
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = random_logits(1000, seed);
    const uint32_t argmax = uint32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    StatusOr<uint32_t> t = sample_token(logits, SamplingParams{0.0f, 1.0f, seed}, seed, scratch);
    REQUIRE(t.ok());
    CHECK(*t == argmax);
  }
  std::vector<float> tie = {1.0f, 3.0f, -INFINITY, 3.0f};
  CHECK(*sample_token(tie, SamplingParams{}, 0, scratch) == 1u);
}

TEST_CASE("models.kernels: sampling refuses bad parameters and bad logits") {
  SamplingScratch scratch;
  const std::vector<float> logits = {0.0f, 1.0f};
  for (SamplingParams p : {SamplingParams{-0.5f, 1.0f, 0}, SamplingParams{NAN, 1.0f, 0},
                           SamplingParams{INFINITY, 1.0f, 0}, SamplingParams{1.0f, 0.0f, 0},
                           SamplingParams{1.0f, 1.5f, 0}, SamplingParams{1.0f, NAN, 0},
                           SamplingParams{1.0f, -0.1f, 0}}) {
    CAPTURE(p.temperature);
    CAPTURE(p.top_p);
    CHECK(validate_sampling_params(p).code() == StatusCode::kInvalidArgument);
    CHECK(sample_token(logits, p, 0, scratch).status().code() == StatusCode::kInvalidArgument);
  }
  CHECK(validate_sampling_params(SamplingParams{0.0f, 1.0f, 0}).ok());
  CHECK(validate_sampling_params(SamplingParams{1.3f, 0.01f, 0}).ok());
  const std::vector<float> nan_logit = {0.0f, NAN, 1.0f};
  Status s = sample_token(nan_logit, SamplingParams{1.0f, 1.0f, 1}, 0, scratch).status();
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("logit 1") != std::string::npos);
  const std::vector<float> all_masked = {-INFINITY, -INFINITY};
  CHECK(sample_token(all_masked, SamplingParams{1.0f, 1.0f, 1}, 0, scratch).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(sample_token(std::span<const float>(), SamplingParams{}, 0, scratch).status().code() ==
        StatusCode::kInvalidArgument);
  // A batch names the refused row, and the row counts must agree.
  const float rows[4] = {0.0f, 1.0f, NAN, 0.0f};
  const SamplingParams params[2] = {{}, {}};
  const uint64_t positions[2] = {0, 0};
  uint32_t tokens[2] = {9, 9};
  s = sample_tokens(rows, 2, 2, params, positions, scratch, tokens);
  CHECK(s.message().find("row 1") != std::string::npos);
  CHECK(tokens[0] == 1u);
  CHECK(sample_tokens(rows, 2, 2, std::span(params, 1), positions, scratch, tokens).code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("models.kernels: masked (-inf) tokens are never drawn; top-p stays in the nucleus") {
  SamplingScratch scratch;
  std::vector<float> logits = random_logits(200, 7);
  for (uint32_t i = 0; i < 200; i += 3) logits[i] = -INFINITY;
  const std::vector<double> p = probabilities(logits, 1.5);
  const std::set<uint32_t> core = nucleus(p, 0.6);
  REQUIRE(core.size() > 1);
  std::set<uint32_t> seen_full;
  for (uint64_t pos = 0; pos < 3000; ++pos) {
    const uint32_t t = *sample_token(logits, SamplingParams{1.5f, 0.6f, 99}, pos, scratch);
    CHECK(core.count(t) == 1);
    const uint32_t u = *sample_token(logits, SamplingParams{1.5f, 1.0f, 99}, pos, scratch);
    CHECK(u % 3 != 0);
    seen_full.insert(u);
  }
  CHECK(seen_full.size() > core.size());  // without top-p, tokens outside the nucleus do come up
}

TEST_CASE("models.kernels: the same seed and position give the same token in any batch") {
  SamplingScratch scratch;
  const std::vector<float> a = random_logits(500, 11), b = random_logits(500, 12);
  const SamplingParams pa{0.9f, 0.95f, 1234}, pb{1.2f, 1.0f, 77};
  std::vector<float> batch_ab(a), batch_ba(b);
  batch_ab.insert(batch_ab.end(), b.begin(), b.end());
  batch_ba.insert(batch_ba.end(), a.begin(), a.end());
  uint32_t differ = 0;
  for (uint64_t pos = 0; pos < 200; ++pos) {
    const SamplingParams p_ab[2] = {pa, pb}, p_ba[2] = {pb, pa};
    const uint64_t positions[2] = {pos, pos + 5};
    const uint64_t positions_ba[2] = {pos + 5, pos};
    uint32_t t_ab[2], t_ba[2];
    REQUIRE(sample_tokens(batch_ab.data(), 2, 500, p_ab, positions, scratch, t_ab).ok());
    REQUIRE(sample_tokens(batch_ba.data(), 2, 500, p_ba, positions_ba, scratch, t_ba).ok());
    CHECK(t_ab[0] == t_ba[1]);
    CHECK(t_ab[1] == t_ba[0]);
    CHECK(*sample_token(a, pa, pos, scratch) == t_ab[0]);
    differ += *sample_token(a, SamplingParams{0.9f, 0.95f, 1235}, pos, scratch) != t_ab[0];
  }
  CHECK(differ > 20);  // another seed gives other draws
  CHECK(sampling_uniform(1, 2) == sampling_uniform(1, 2));
  CHECK(sampling_uniform(1, 2) != sampling_uniform(2, 1));
}

TEST_CASE("models.kernels: sampled frequencies follow the tempered, nucleus-cut distribution") {
  // Chi-square goodness of fit with a fixed seed (deterministic). Bound 30 for <= 5 degrees of
  // freedom: a correct sampler exceeds it with probability < 2e-5, a wrong temperature or
  // nucleus gives values in the hundreds.
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, -3.0f};
  SamplingScratch scratch;
  const uint32_t draws = 20000;
  for (float top_p : {1.0f, 0.8f}) {
    CAPTURE(top_p);
    std::vector<double> p = probabilities(logits, 0.8);
    const std::set<uint32_t> core = nucleus(p, top_p);
    double mass = 0;
    for (uint32_t t = 0; t < p.size(); ++t) mass += core.count(t) ? p[t] : 0.0;
    std::vector<uint32_t> counts(logits.size(), 0);
    for (uint64_t pos = 0; pos < draws; ++pos)
      ++counts[*sample_token(logits, SamplingParams{0.8f, top_p, 2024}, pos, scratch)];
    double chi2 = 0;
    for (uint32_t t = 0; t < p.size(); ++t) {
      if (!core.count(t)) {
        CHECK(counts[t] == 0);
        continue;
      }
      const double expected = draws * p[t] / mass;
      chi2 += (counts[t] - expected) * (counts[t] - expected) / expected;
    }
    CHECK(chi2 < 30.0);
  }
}

TEST_CASE("models.kernels: embedding lookup widens table rows and refuses bad ids") {
  const uint32_t vocab = 10, hidden = 6;
  std::vector<uint16_t> table(vocab * hidden);
  for (uint32_t t = 0; t < vocab; ++t)  // row t, column h holds t + h / 8 (exact in BF16)
    for (uint32_t h = 0; h < hidden; ++h) table[t * hidden + h] = ic::float_to_bf16(t + h / 8.0f);
  const std::vector<uint32_t> ids = {3, 0, 9, 3};
  std::vector<float> out(ids.size() * hidden);
  REQUIRE(embedding_lookup(table, vocab, hidden, ids, out.data()).ok());
  for (size_t i = 0; i < ids.size(); ++i)
    for (uint32_t h = 0; h < hidden; ++h) CHECK(out[i * hidden + h] == ids[i] + h / 8.0f);
  std::vector<float> untouched(3 * hidden, -1.0f);
  const std::vector<uint32_t> bad = {1, 10, 2};
  Status s = embedding_lookup(table, vocab, hidden, bad, untouched.data());
  CHECK(s.code() == StatusCode::kOutOfRange);
  CHECK(s.message().find("id 10") != std::string::npos);
  CHECK(untouched[0] == -1.0f);
  CHECK(embedding_lookup(std::span(table).first(59), vocab, hidden, ids, out.data()).code() ==
        StatusCode::kInvalidArgument);
}
