// The router against a double-precision reference (sort-based, written here) on random
// logits for DeepSeek-V3-, Qwen3- and Mixtral-style configs, and on hand-made cases: ties
// (lower id / group wins), the bias choosing but not weighting, group scores from the top-2
// sum, normalisation and scaling.
#include <doctest/doctest.h>

#include <cmath>

#include "models/kernels/router.h"
#include "tests/models/moe_test_util.h"

using namespace modeltest;

namespace {

RouterConfig config(uint32_t E, uint32_t K, RouterScore score, bool norm, float scaling,
                    uint32_t groups = 1, uint32_t topk_groups = 1) {
  RouterConfig c;
  c.num_experts = E;
  c.top_k = K;
  c.score = score;
  c.normalize_topk = norm;
  c.routed_scaling = scaling;
  c.num_groups = groups;
  c.topk_groups = topk_groups;
  return c;
}

RouterOutput run(const RouterConfig& c, const std::vector<float>& logits, uint32_t tokens,
                 const std::vector<float>& bias = {}) {
  RouterOutput out;
  Status s = route(c, logits, tokens, bias, &out);
  REQUIRE_MESSAGE(s.ok(), s.to_string());
  return out;
}

}  // namespace

TEST_CASE("models.router: random logits route as the double reference (DSV3, Qwen3, Mixtral)") {
  struct Case {
    const char* name;
    RouterConfig c;
    bool bias;
  };
  const Case cases[] = {
      {"deepseek-v3-like", config(64, 8, RouterScore::kSigmoid, true, 2.5f, 8, 4), true},
      {"builtin-like", config(384, 8, RouterScore::kSigmoid, true, 1.0f, 8, 4), true},
      {"qwen3-like", config(128, 8, RouterScore::kSoftmax, true, 1.0f), false},
      {"no-norm softmax", config(60, 6, RouterScore::kSoftmax, false, 1.0f), false},
      {"mixtral", config(8, 2, RouterScore::kSoftmax, true, 1.0f), false},
  };
  Rng rng(11);
  for (const Case& k : cases) {
    CAPTURE(k.name);
    const uint32_t E = k.c.num_experts, T = 97;
    std::vector<float> logits(uint64_t{T} * E), bias;
    for (auto& l : logits) l = rng.uniform(4.0f);
    if (k.bias) {
      bias.resize(E);
      for (auto& b : bias) b = rng.uniform(0.1f);
    }
    const RouterOutput out = run(k.c, logits, T, bias);
    const RefRoute ref = ref_route(k.c, logits, T, bias);
    REQUIRE(out.topk_ids.size() == ref.ids.size());
    int bad = 0;
    std::vector<uint32_t> counts(E, 0);
    for (size_t i = 0; i < ref.ids.size(); ++i) {
      ++counts[out.topk_ids[i]];
      if (out.topk_ids[i] != ref.ids[i] ||
          std::fabs(out.topk_weights[i] - ref.weights[i]) > 2e-6 * (1 + std::fabs(ref.weights[i])))
        if (++bad <= 5)
          FAIL_CHECK("pair " << i << ": got expert " << out.topk_ids[i] << " weight "
                             << out.topk_weights[i] << ", reference " << ref.ids[i] << " "
                             << ref.weights[i]);
    }
    CHECK(bad == 0);
    CHECK(out.expert_counts == counts);
    if (k.c.normalize_topk)
      for (uint32_t t = 0; t < T; ++t) {
        double sum = 0;
        for (uint32_t j = 0; j < k.c.top_k; ++j) sum += out.topk_weights[t * k.c.top_k + j];
        CHECK(sum == doctest::Approx(k.c.routed_scaling).epsilon(1e-5));
      }
  }
}

TEST_CASE("models.router: ties go to the lower expert id and the lower group id") {
  // All logits equal: experts 0..k-1.
  RouterOutput o = run(config(16, 4, RouterScore::kSoftmax, true, 1.0f), std::vector<float>(16, 0.3f), 1);
  CHECK(o.topk_ids == std::vector<int32_t>{0, 1, 2, 3});
  for (float w : o.topk_weights) CHECK(w == doctest::Approx(0.25f));
  // Groups all equal: groups 0 and 1 kept (4 experts each), the lowest ids chosen.
  o = run(config(16, 3, RouterScore::kSigmoid, false, 1.0f, 4, 2), std::vector<float>(16, -1.0f), 1);
  CHECK(o.topk_ids == std::vector<int32_t>{0, 1, 2});
  // Equal top scores in experts 9 and 5 (and 13): order 5, 9, 13.
  std::vector<float> l(16, 0.0f);
  l[9] = l[5] = l[13] = 2.0f;
  o = run(config(16, 3, RouterScore::kSigmoid, true, 1.0f), l, 1);
  CHECK(o.topk_ids == std::vector<int32_t>{5, 9, 13});
  // Group tie: groups 1 and 3 have equal scores above the rest; only one kept: group 1.
  std::vector<float> g(16, -3.0f);
  g[4] = g[5] = g[12] = g[13] = 1.0f;
  o = run(config(16, 2, RouterScore::kSigmoid, true, 1.0f, 4, 1), g, 1);
  CHECK(o.topk_ids == std::vector<int32_t>{4, 5});
}

TEST_CASE("models.router: the bias selects but the weights come from the unbiased scores") {
  // Expert 0 has the highest score; expert 2's bias lifts it above. top-1, no normalisation.
  std::vector<float> logits = {2.0f, 0.0f, 0.0f, -1.0f};
  std::vector<float> bias = {0.0f, 0.0f, 0.9f, 0.0f};
  RouterOutput o = run(config(4, 1, RouterScore::kSigmoid, false, 2.5f), logits, 1, bias);
  CHECK(o.topk_ids[0] == 2);
  CHECK(o.topk_weights[0] == doctest::Approx(0.5 * 2.5));  // sigmoid(0) * scaling
  CHECK(o.expert_counts == std::vector<uint32_t>{0, 0, 1, 0});
  // top-2 normalised: weights proportional to sigmoid(2) and sigmoid(0), times the scaling.
  o = run(config(4, 2, RouterScore::kSigmoid, true, 2.5f), logits, 1, bias);
  CHECK(o.topk_ids == std::vector<int32_t>{2, 0});
  const double s2 = 1 / (1 + std::exp(-2.0)), s0 = 0.5;
  CHECK(o.topk_weights[0] == doctest::Approx(2.5 * s0 / (s0 + s2)));
  CHECK(o.topk_weights[1] == doctest::Approx(2.5 * s2 / (s0 + s2)));
}

TEST_CASE("models.router: a group's score is the sum of its two best experts, not its best") {
  // Group 0 = {0,1,2,3} has the single best expert; group 1 = {4..7} the best pair.
  std::vector<float> l = {5.0f, -5.0f, -5.0f, -5.0f, 1.0f, 1.0f, -5.0f, -5.0f};
  RouterOutput o = run(config(8, 2, RouterScore::kSigmoid, true, 1.0f, 2, 1), l, 1);
  CHECK(o.topk_ids == std::vector<int32_t>{4, 5});
  // Without groups, expert 0 is first.
  o = run(config(8, 2, RouterScore::kSigmoid, true, 1.0f), l, 1);
  CHECK(o.topk_ids == std::vector<int32_t>{0, 4});
}

TEST_CASE("models.router: Mixtral's softmax over all experts then renormalised top-2") {
  std::vector<float> l = {0.1f, 1.5f, -0.3f, 0.9f, 0.0f, -2.0f, 0.4f, 1.1f};
  RouterOutput o = run(config(8, 2, RouterScore::kSoftmax, true, 1.0f), l, 1);
  CHECK(o.topk_ids == std::vector<int32_t>{1, 7});
  const double a = std::exp(1.5), b = std::exp(1.1);
  CHECK(o.topk_weights[0] == doctest::Approx(a / (a + b)).epsilon(1e-6));
  CHECK(o.topk_weights[1] == doctest::Approx(b / (a + b)).epsilon(1e-6));
}

TEST_CASE("models.router: logits from router_logits, and bad input refused before writing") {
  std::vector<float> x = {1, 2, 3, 4, 5, 6}, gate = {1, 0, 0, 0, 1, 0, 1, 1, 1, 0.5f, -1, 2};
  std::vector<float> logits(8);
  REQUIRE(router_logits(x, 2, 3, gate, 4, logits).ok());
  CHECK(logits == std::vector<float>{1, 2, 6, 4.5f, 4, 5, 15, 9});
  CHECK(router_logits(x, 2, 3, gate, 3, logits).code() == StatusCode::kInvalidArgument);

  RouterOutput out;
  out.num_tokens = 77;
  std::vector<float> l(8, 0.0f);
  l[3] = std::nanf("");
  Status s = route(config(8, 2, RouterScore::kSoftmax, true, 1.0f), l, 1, {}, &out);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("expert 3") != std::string::npos);
  CHECK(out.num_tokens == 77);  // untouched
  CHECK(route(config(8, 9, RouterScore::kSoftmax, true, 1.0f), std::vector<float>(8), 1, {}, &out)
            .code() == StatusCode::kInvalidArgument);
  CHECK(route(config(8, 2, RouterScore::kSoftmax, true, 1.0f, 3, 1), std::vector<float>(8), 1, {},
              &out)
            .code() == StatusCode::kInvalidArgument);
  CHECK(route(config(8, 5, RouterScore::kSoftmax, true, 1.0f, 4, 2), std::vector<float>(8), 1, {},
              &out)
            .code() == StatusCode::kInvalidArgument);  // 2 groups of 2 hold fewer than 5
  CHECK(route(config(8, 2, RouterScore::kSoftmax, true, 1.0f), std::vector<float>(8), 1,
              std::vector<float>(7), &out)
            .code() == StatusCode::kInvalidArgument);
}
