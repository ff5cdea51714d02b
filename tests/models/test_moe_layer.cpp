// One MoE layer: the single-host path against a naive double-precision reference (routing
// included), and the expert-parallel path over 1, 8 and 384 ranks (presets n8 and cm384,
// the interconnect's dispatch and combine) against the single-host path, for the built-in
// model's shapes (hidden 128, 384 experts, top-8, one shared expert) with seeded weights.
#include <doctest/doctest.h>

#include <cmath>

#include "models/moe/moe_layer.h"
#include "tests/interconnect/test_moe_dispatch_util.h"
#include "tests/models/moe_test_util.h"

using namespace modeltest;

namespace {

ModelConfig builtin() {
  auto c = model_config("builtin");
  REQUIRE(c.ok());
  return *c;
}

const LayerData& builtin_weights() {
  static const LayerData d(builtin(), 1234);
  return d;
}

// |got - want| <= rel * (max |want| over the token's row) + abs, per element.
template <typename A, typename B>
int compare_rows(const A& got, const B& want, uint32_t tokens, uint32_t H, double rel,
                 double abs = 1e-6) {
  int bad = 0;
  for (uint32_t t = 0; t < tokens; ++t) {
    double mx = 0;
    for (uint32_t h = 0; h < H; ++h) mx = std::max(mx, std::fabs(double(want[uint64_t{t} * H + h])));
    for (uint32_t h = 0; h < H; ++h) {
      const double g = got[uint64_t{t} * H + h], w = want[uint64_t{t} * H + h];
      if (!(std::fabs(g - w) <= rel * mx + abs) && ++bad <= 5)
        FAIL_CHECK("token " << t << " element " << h << ": " << g << " vs " << w
                            << " (row max " << mx << ")");
    }
  }
  return bad;
}

struct EpRun {
  std::vector<std::vector<float>> out;  // per rank
  std::vector<std::vector<int32_t>> ids;
};

// The EP layer with the map's placement: each rank gets only its local experts.
std::unique_ptr<MoeLayerEp> ep_layer(const ModelConfig& c, const LayerData& d,
                                     const ic::ExpertMap& map, ExpertPrecision p) {
  std::vector<std::vector<ExpertWeights>> rank_experts(map.num_ranks());
  for (uint32_t r = 0; r < map.num_ranks(); ++r)
    for (const ic::LocalExpert& le : map.local_experts(r))
      rank_experts[r].push_back(d.routed[le.expert].view());
  auto layer = MoeLayerEp::create(c, d.router(), d.shared_views(), map, rank_experts, p);
  REQUIRE_MESSAGE(layer.ok(), layer.status().to_string());
  return std::move(layer).value();
}

// One EP forward on a fresh buffer of the first `npus` NPUs with the given formats.
EpRun run_ep(moetest::Machine& m, uint32_t npus, MoeLayerEp& layer,
             const std::vector<std::vector<float>>& x, ic::TokenFormat dispatch,
             ic::TokenFormat combine) {
  const ModelConfig& c = layer.config();
  uint32_t max_tokens = 1;
  for (const auto& v : x) max_tokens = std::max<uint32_t>(max_tokens, v.size() / c.hidden);
  ic::MoeBufferConfig bc;
  bc.max_tokens_per_rank = max_tokens;
  bc.hidden = c.hidden;
  bc.max_topk = c.top_k;
  bc.dispatch_format = dispatch;
  bc.combine_format = combine;
  bc.issue_contexts = 4;
  auto buffer = m.buffer(bc, npus);
  EpRun run;
  run.out.resize(x.size());
  std::vector<std::span<const float>> in(x.size());
  std::vector<std::span<float>> out(x.size());
  for (size_t r = 0; r < x.size(); ++r) {
    run.out[r].assign(x[r].size(), NAN);
    in[r] = x[r];
    out[r] = run.out[r];
  }
  Status s = layer.forward(*buffer, in, out);
  REQUIRE_MESSAGE(s.ok(), s.to_string());
  for (uint32_t r = 0; r < npus; ++r) run.ids.push_back(layer.last_routing(r).topk_ids);
  return run;
}

// Tokens per rank (ragged, seeded), BF16-representable like a model's activations.
std::vector<std::vector<float>> rank_tokens(uint32_t ranks, uint32_t max_tokens, uint32_t H,
                                            uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<float>> x(ranks);
  for (auto& v : x) v = random_bf16_floats(rng, uint64_t(rng.next() % (max_tokens + 1)) * H, 1.5f);
  return x;
}

// Single-host forward of every rank's tokens, concatenated in rank order.
std::vector<float> single_host(const ModelConfig& c, const LayerData& d,
                               const std::vector<std::vector<float>>& x, ExpertPrecision p,
                               std::vector<int32_t>* ids) {
  std::vector<float> all;
  for (const auto& v : x) all.insert(all.end(), v.begin(), v.end());
  // One single-host layer per precision for the built-in weights (preparing 384 experts
  // is the expensive part).
  static std::unique_ptr<MoeLayer> cached[2];
  std::unique_ptr<MoeLayer>& layer = cached[static_cast<int>(p)];
  if (!layer) {
    auto l = MoeLayer::create(c, d.weights(), p);
    REQUIRE_MESSAGE(l.ok(), l.status().to_string());
    layer = std::move(l).value();
  }
  std::vector<float> out(all.size());
  const uint32_t n = static_cast<uint32_t>(all.size() / c.hidden);
  REQUIRE(layer->forward(all, n, out).ok());
  *ids = layer->last_routing().topk_ids;
  return out;
}

template <typename T>
std::vector<T> concat(const std::vector<std::vector<T>>& v) {
  std::vector<T> all;
  for (const auto& p : v) all.insert(all.end(), p.begin(), p.end());
  return all;
}

}  // namespace

TEST_CASE("models.moe_layer: the single-host layer equals a double reference") {
  ModelConfig mixtral_like;  // softmax top-2 of 8, renormalised, no shared expert, no bias
  mixtral_like.name = "mixtral-like";
  mixtral_like.hidden = 64;
  mixtral_like.num_experts = 8;
  mixtral_like.top_k = 2;
  mixtral_like.expert_intermediate = 96;
  const ModelConfig configs[] = {builtin(), mixtral_like};
  for (const ModelConfig& c : configs) {
    CAPTURE(c.name);
    const LayerData local(c, 99);
    const LayerData& d = c.name == "builtin" ? builtin_weights() : local;
    Rng rng(5);
    const uint32_t T = 40;
    const auto x = random_bf16_floats(rng, uint64_t{T} * c.hidden, 1.5f);
    std::vector<int32_t> ref_ids;
    const auto ref = ref_layer(c, d, x, T, &ref_ids);
    for (ExpertPrecision p : {ExpertPrecision::kBf16, ExpertPrecision::kInt8}) {
      CAPTURE(expert_precision_name(p));
      auto layer = MoeLayer::create(c, d.weights(), p);
      REQUIRE_MESSAGE(layer.ok(), layer.status().to_string());
      std::vector<float> out(ref.size(), NAN);
      REQUIRE((*layer)->forward(x, T, out).ok());
      CHECK((*layer)->last_routing().topk_ids == ref_ids);
      // BF16 weights: FP32 arithmetic only. INT8: two quantised products per expert.
      CHECK(compare_rows(out, ref, T, c.hidden, p == ExpertPrecision::kInt8 ? 0.05 : 2e-5) == 0);
    }
  }
}

TEST_CASE("models.moe_layer: expert parallel over 1, 8 and 384 ranks equals the single-host path") {
  const ModelConfig c = builtin();
  const LayerData& d = builtin_weights();
  struct Case {
    const char* preset;
    uint32_t ranks, max_tokens;
  };
  for (Case k : {Case{"n8", 1, 24}, Case{"n8", 8, 8}, Case{"cm384", 384, 1}}) {
    CAPTURE(k.ranks);
    moetest::Machine m(k.preset);
    const auto x = rank_tokens(k.ranks, k.max_tokens, c.hidden, 17 + k.ranks);
    const ic::ExpertMap map = ic::ExpertMap::uniform(c.num_experts, k.ranks);
    auto layer = ep_layer(c, d, map, ExpertPrecision::kBf16);
    const EpRun ep = run_ep(m, k.ranks, *layer, x, ic::TokenFormat::kBf16, ic::TokenFormat::kFloat32);
    std::vector<int32_t> ids;
    const auto ref = single_host(c, d, x, ExpertPrecision::kBf16, &ids);
    const uint32_t T = static_cast<uint32_t>(ref.size() / c.hidden);
    REQUIRE(T > 0);
    CHECK(concat(ep.ids) == ids);
    // BF16 tokens are carried exactly and the combine is FP32: only summation order differs.
    CHECK(compare_rows(concat(ep.out), ref, T, c.hidden, 1e-5) == 0);
  }
}

TEST_CASE("models.moe_layer: EP with replicas, INT8 dispatch, BF16 combine and W8A8 experts") {
  const ModelConfig c = builtin();
  const LayerData& d = builtin_weights();
  moetest::Machine m("n8");
  const auto x = rank_tokens(8, 6, c.hidden, 77);
  ic::ExpertMap map = ic::ExpertMap::uniform(c.num_experts, 8);
  for (uint32_t e : {0u, 7u, 200u, 383u}) REQUIRE(map.add_replica(e, (e / 48 + 3) % 8).ok());
  for (ExpertPrecision p : {ExpertPrecision::kBf16, ExpertPrecision::kInt8}) {
    CAPTURE(expert_precision_name(p));
    std::vector<int32_t> ids;
    const auto ref = single_host(c, d, x, p, &ids);
    const uint32_t T = static_cast<uint32_t>(ref.size() / c.hidden);
    // BF16 combine: each rank's partial and the sum rounded to BF16 (2^-8 relative each).
    auto layer = ep_layer(c, d, map, p);
    EpRun ep = run_ep(m, 8, *layer, x, ic::TokenFormat::kBf16, ic::TokenFormat::kBf16);
    CHECK(concat(ep.ids) == ids);
    CHECK(compare_rows(concat(ep.out), ref, T, c.hidden, 0.02) == 0);
    // INT8 dispatch: tokens quantised per token (|err| <= max|x|/254) on top.
    ep = run_ep(m, 8, *layer, x, ic::TokenFormat::kInt8, ic::TokenFormat::kFloat32);
    CHECK(compare_rows(concat(ep.out), ref, T, c.hidden, p == ExpertPrecision::kInt8 ? 0.06 : 0.03) == 0);
  }
}

TEST_CASE("models.moe_layer: bad weights, maps and buffers are refused with what was wrong") {
  const ModelConfig c = builtin();
  const LayerData& d = builtin_weights();
  MoeLayerWeights w = d.weights();
  w.routed.pop_back();
  auto l = MoeLayer::create(c, w, ExpertPrecision::kBf16);
  REQUIRE(!l.ok());
  CHECK(l.status().message().find("383 routed experts") != std::string::npos);
  w = d.weights();
  w.router.bias = {};
  CHECK(MoeLayer::create(c, w, ExpertPrecision::kBf16).status().code() == StatusCode::kInvalidArgument);

  ic::ExpertMap map = ic::ExpertMap::uniform(c.num_experts, 8);
  std::vector<std::vector<ExpertWeights>> per_rank(8);
  for (uint32_t r = 0; r < 8; ++r)
    for (const auto& le : map.local_experts(r)) per_rank[r].push_back(d.routed[le.expert].view());
  per_rank[5].pop_back();
  auto ep = MoeLayerEp::create(c, d.router(), d.shared_views(), map, per_rank, ExpertPrecision::kBf16);
  REQUIRE(!ep.ok());
  CHECK(ep.status().message().find("rank 5") != std::string::npos);
  per_rank[5].push_back(d.routed[5 * 48 + 47].view());
  ic::ExpertMap with_shared = map;
  REQUIRE(with_shared.add_shared_expert({0, 1}).ok());
  CHECK(MoeLayerEp::create(c, d.router(), d.shared_views(), with_shared, per_rank,
                           ExpertPrecision::kBf16)
            .status()
            .code() == StatusCode::kInvalidArgument);
  auto good = MoeLayerEp::create(c, d.router(), d.shared_views(), map, per_rank, ExpertPrecision::kBf16);
  REQUIRE(good.ok());
  moetest::Machine m("n8");
  ic::MoeBufferConfig bc;
  bc.max_tokens_per_rank = 2;
  bc.hidden = 64;  // not the layer's
  bc.max_topk = 8;
  bc.issue_contexts = 2;
  auto buffer = m.buffer(bc, 8);
  std::vector<std::vector<float>> x(8, std::vector<float>(c.hidden, 0.5f)), out = x;
  std::vector<std::span<const float>> in(x.begin(), x.end());
  std::vector<std::span<float>> os(out.begin(), out.end());
  Status s = (*good)->forward(*buffer, in, os);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("hidden 64") != std::string::npos);
  bc.hidden = c.hidden;
  bc.mode = ic::Mode::kTiming;
  auto timing = m.buffer(bc, 8);
  CHECK((*good)->forward(*timing, in, os).code() == StatusCode::kFailedPrecondition);
}
