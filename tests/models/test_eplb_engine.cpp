// Expert re-placement in a serving engine (builtin model, n8): the balancer's maps applied
// between two decode steps change no generated token, move the weights they must (fabric
// copies for packed blocks, page migration for own-page blocks), lower the imbalance of the
// observed load, and moving back restores every NPU's HBM use exactly. Bad maps change
// nothing.
#include <doctest/doctest.h>

#include <numeric>

#include "interconnect/quant_int8.h"
#include "models/engine/generate.h"
#include "models/eplb/expert_load.h"
#include "models/eplb/imbalance.h"
#include "models/eplb/placement_policy.h"
#include "runtime/runtime.h"

using namespace moe;
using namespace moe::models;

namespace {

std::unique_ptr<rt::Runtime> open_n8() {
  rt::RuntimeOptions o;
  o.supernode = "n8";
  o.host.synthetic = "pack:1 numa:1 core:2";
  return rt::Runtime::open(o).value();
}

const ModelWeights& builtin_weights() {
  static const ModelWeights w = ModelWeights::random(model_config("builtin").value(), 99).value();
  return w;
}

// The built-in model with 32 experts (4 groups): own-page blocks for it fit a small host.
const ModelWeights& small_weights() {
  static const ModelWeights w = [] {
    ModelConfig c = model_config("builtin").value();
    c.name = "builtin-32";
    c.num_experts = 32;
    c.num_groups = 4;
    c.topk_groups = 4;
    return ModelWeights::random(c, 7).value();
  }();
  return w;
}

std::vector<GenerateRequest> requests() {
  std::vector<GenerateRequest> out(2);
  out[0].prompt = bytes_to_tokens("The supernode balances its experts.");
  out[1].prompt = bytes_to_tokens("Hot experts get replicas;");
  for (auto& r : out) r.max_new_tokens = 10;
  return out;
}

std::vector<uint64_t> in_use_per_npu(rt::Runtime& rt) {
  std::vector<uint64_t> out;
  for (uint32_t n = 0; n < rt.num_devices(); ++n) out.push_back(rt.memory().npu_stats(n).in_use_bytes);
  return out;
}

std::vector<ic::ExpertMap> current_maps(const Engine& e) {
  std::vector<ic::ExpertMap> out;
  for (uint32_t m = 0; m < e.config().num_moe_layers(); ++m) out.push_back(e.expert_map(m));
  return out;
}

std::vector<std::vector<uint32_t>> reference_tokens(const ModelWeights& w) {
  auto rt = open_n8();
  auto e = Engine::create(*rt, w).value();
  const auto reqs = requests();
  auto out = generate(*e, reqs);
  REQUIRE_MESSAGE(out.ok(), out.status().to_string());
  return out.value();
}

// Generates with re-placements during decoding: after 3 tokens of request 0 the balancer's
// maps for the load observed so far (in `stages` steps: transition_stages, applied after
// tokens 3, 4, ...), after 6 tokens back to the maps the engine started with (at once).
// Returns the tokens; checks the moves and the HBM totals.
std::vector<std::vector<uint32_t>> generate_with_replacement(const ModelWeights& w, bool own_pages,
                                                             eplb::Policy policy, uint32_t stages) {
  auto rt = open_n8();
  EngineOptions o;
  o.expert_own_pages = own_pages;
  auto created = Engine::create(*rt, w, o);
  REQUIRE_MESSAGE(created.ok(), created.status().to_string());
  Engine& e = *created.value();
  const ModelConfig& c = e.config();
  const std::vector<ic::ExpertMap> initial = current_maps(e);
  const std::vector<uint64_t> hbm_before = in_use_per_npu(*rt);
  std::vector<dev::NpuId> npus(8);
  std::iota(npus.begin(), npus.end(), 0);
  const eplb::PlacementShape shape =
      eplb::placement_shape(rt->topology(), npus, c.num_experts, c.num_groups, c.num_experts / 8);

  uint32_t tokens_of_0 = 0;
  std::vector<ic::ExpertMap> target;
  std::vector<std::vector<ic::ExpertMap>> staged;  // [stage][moe layer]
  Status failure = ok_status();
  uint32_t applied = 0;
  auto on_token = [&](size_t request, uint32_t) {
    if (request != 0) return;
    ++tokens_of_0;
    if (tokens_of_0 == 3) {
      eplb::ExpertLoadTracker tracker(c.num_moe_layers(), c.num_experts, 1.0);
      if (!(failure = tracker.observe(e.expert_load())).ok()) return;
      const auto& loads = tracker.window();
      auto maps = eplb::rebalance(loads, shape, policy, initial);
      if (!maps.ok()) { failure = maps.status(); return; }
      target = maps.value();
      double before = 0, after = 0;
      for (uint32_t m = 0; m < c.num_moe_layers(); ++m) {
        before = std::max(before, eplb::imbalance(loads[m], initial[m]));
        after = std::max(after, eplb::imbalance(loads[m], target[m]));
      }
      MESSAGE(c.name << std::string(own_pages ? " own pages" : " packed") << ": observed imbalance (max over layers) "
                     << before << " -> " << after);
      CHECK(after < before);
      staged.assign(stages, {});
      for (uint32_t m = 0; m < c.num_moe_layers(); ++m) {
        auto t = eplb::transition_stages(initial[m], target[m], stages);
        if (!t.ok()) { failure = t.status(); return; }
        REQUIRE(t.value().size() == stages);
        for (uint32_t k = 0; k < stages; ++k) staged[k].push_back(t.value()[k]);
      }
    }
    if (tokens_of_0 >= 3 && tokens_of_0 < 3 + stages) {
      PlacementChangeStats st;
      failure = e.apply_expert_maps(staged[tokens_of_0 - 3], &st);
      if (!failure.ok()) return;
      ++applied;
      CHECK(st.layers_changed == c.num_moe_layers());
      CHECK(st.moves.banks_rebuilt > 0);
      CHECK(st.moves.working_copies_built > 0);
      CHECK(st.moves.fabric_bytes > 0);
      CHECK(st.moves.modelled_ns > 0);
      if (own_pages) {
        CHECK(st.moves.replicas_migrated > 0);
      } else {
        CHECK(st.moves.replicas_migrated == 0);
        CHECK(st.moves.replicas_copied > 0);
      }
      // The replicas each rank now holds are what its working copies hold.
      for (uint32_t m = 0; m < c.num_moe_layers(); ++m)
        for (uint32_t r = 0; r < 8; ++r)
          CHECK(e.weights().experts(m, r).size() == e.expert_map(m).local_experts(r).size());
      if (tokens_of_0 == 2 + stages)
        for (uint32_t m = 0; m < c.num_moe_layers(); ++m) {
          CHECK(eplb::replicas_added(e.expert_map(m), target[m]) == 0);
          CHECK(eplb::replicas_added(target[m], e.expert_map(m)) == 0);
        }
    } else if (tokens_of_0 == 6) {
      PlacementChangeStats st;
      failure = e.apply_expert_maps(initial, &st);
      if (!failure.ok()) return;
      ++applied;
      CHECK(st.moves.replicas_freed > 0);
      CHECK(in_use_per_npu(*rt) == hbm_before);
    }
  };
  const auto reqs = requests();
  auto out = generate(e, reqs, nullptr, on_token);
  REQUIRE_MESSAGE(failure.ok(), failure.to_string());
  REQUIRE_MESSAGE(out.ok(), out.status().to_string());
  CHECK(applied == stages + 1);
  if (own_pages) {
    uint64_t pages_in = 0;
    for (uint32_t n = 0; n < 8; ++n) pages_in += rt->memory().npu_stats(n).pages_migrated_in;
    CHECK(pages_in > 0);
  }
  return out.value();
}

}  // namespace

TEST_CASE("models.eplb.engine: re-placing experts mid-generation in 2 stages changes no token (fabric copies)") {
  const auto ref = reference_tokens(builtin_weights());
  CHECK(generate_with_replacement(builtin_weights(), false, eplb::Policy::kGlobal, 2) == ref);
}

TEST_CASE("models.eplb.engine: re-placing experts by page migration changes no token") {
  const auto ref = reference_tokens(small_weights());
  CHECK(generate_with_replacement(small_weights(), true, eplb::Policy::kHierarchical, 1) == ref);
}

TEST_CASE("models.eplb.engine: a skewed load is rebalanced and bad maps change nothing") {
  auto rt = open_n8();
  auto e = Engine::create(*rt, builtin_weights()).value();
  const ModelConfig& c = e->config();
  const std::vector<ic::ExpertMap> initial = current_maps(*e);
  // A few hot experts in every layer (test-only load: 4 experts take ~60% of the tokens).
  std::vector<std::vector<double>> loads(c.num_moe_layers(), std::vector<double>(c.num_experts, 10.0));
  for (auto& l : loads)
    for (uint32_t hot : {3u, 4u, 100u, 201u}) l[hot] = 1500.0;
  std::vector<dev::NpuId> npus(8);
  std::iota(npus.begin(), npus.end(), 0);
  const auto shape = eplb::placement_shape(rt->topology(), npus, c.num_experts, c.num_groups, 48);
  auto maps = eplb::rebalance(loads, shape, eplb::Policy::kGlobal, initial);
  REQUIRE(maps.ok());
  const double before = eplb::imbalance(loads[0], initial[0]);
  const double after = eplb::imbalance(loads[0], maps.value()[0]);
  MESSAGE("4 hot experts on 8 NPUs: imbalance " << before << " -> " << after);
  CHECK(before > 2.0);
  CHECK(after < 1.1);
  for (uint32_t hot : {3u, 4u, 100u, 201u}) CHECK(maps.value()[0].replicas(hot).size() > 1);
  std::vector<uint64_t> rank_bytes(8), rank_experts(8, 0);
  for (uint32_t r = 0; r < 8; ++r) {
    rank_bytes[r] = e->weights().hbm_bytes_on_rank(r);
    for (uint32_t m = 0; m < c.num_moe_layers(); ++m) rank_experts[r] += initial[m].local_experts(r).size();
  }
  PlacementChangeStats st;
  REQUIRE(e->apply_expert_maps(maps.value(), &st).ok());
  // Each rank's HBM account changes by the replicas it gained or lost.
  const uint64_t expert_bytes = 3ull * c.hidden * c.expert_intermediate * 2;
  for (uint32_t r = 0; r < 8; ++r) {
    uint64_t now = 0;
    for (uint32_t m = 0; m < c.num_moe_layers(); ++m) now += maps.value()[m].local_experts(r).size();
    CHECK(e->weights().hbm_bytes_on_rank(r) + rank_experts[r] * expert_bytes == rank_bytes[r] + now * expert_bytes);
  }
  CHECK(st.moves.replicas_copied == [&] {
    uint32_t n = 0;
    for (uint32_t m = 0; m < c.num_moe_layers(); ++m) n += eplb::replicas_added(initial[m], maps.value()[m]);
    return n;
  }());
  for (uint32_t m = 0; m < c.num_moe_layers(); ++m)
    CHECK(eplb::imbalance(loads[m], e->expert_map(m)) == doctest::Approx(after).epsilon(0.2));

  // Bad maps: refused naming the problem; the placement in use stays.
  const std::vector<uint64_t> hbm = in_use_per_npu(*rt);
  std::vector<ic::ExpertMap> wrong = maps.value();
  wrong.pop_back();
  CHECK(e->apply_expert_maps(wrong).code() == StatusCode::kInvalidArgument);
  wrong = maps.value();
  wrong[1] = ic::ExpertMap::uniform(c.num_experts, 4);
  const Status ranks = e->apply_expert_maps(wrong);
  CHECK(ranks.code() == StatusCode::kInvalidArgument);
  CHECK(ranks.message().find("MoE layer 1") != std::string::npos);
  wrong[1] = ic::ExpertMap(c.num_experts, 8);  // no replica for any expert
  CHECK(!e->apply_expert_maps(wrong).ok());
  CHECK(in_use_per_npu(*rt) == hbm);
  CHECK(eplb::replicas_added(e->expert_map(1), maps.value()[1]) == 0);
  CHECK(eplb::replicas_added(maps.value()[1], e->expert_map(1)) == 0);
}

TEST_CASE("models.eplb: ExpertBank::take_expert moves prepared experts without changing them") {
  const uint32_t H = 16, I = 8;
  const uint64_t n = uint64_t{H} * I;
  std::vector<uint16_t> w(3 * 3 * n);
  for (size_t i = 0; i < w.size(); ++i) w[i] = ic::float_to_bf16(float((i * 7919) % 97) / 97.0f - 0.5f);
  auto view = [&](uint32_t e) {
    const uint16_t* b = w.data() + e * 3 * n;
    return ExpertWeights{{b, n}, {b + n, n}, {b + 2 * n, n}};
  };
  for (ExpertPrecision p : {ExpertPrecision::kBf16, ExpertPrecision::kInt8}) {
    const std::vector<ExpertWeights> all = {view(0), view(1), view(2)}, picked = {view(2), view(0)};
    ExpertBank source = ExpertBank::create(H, I, all, p).value();
    const ExpertBank expected = ExpertBank::create(H, I, picked, p).value();
    ExpertBank assembled = ExpertBank::empty(H, I, p);
    REQUIRE(assembled.take_expert(source, 2).ok());
    REQUIRE(assembled.take_expert(source, 0).ok());
    CHECK(assembled.size() == 2);
    CHECK(assembled.take_expert(source, 3).code() == StatusCode::kInvalidArgument);
    ExpertBank other = ExpertBank::empty(H, I + 1, p);
    CHECK(other.take_expert(source, 1).code() == StatusCode::kInvalidArgument);
    CHECK(other.size() == 0);
    std::vector<float> x(5 * H);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 11) / 11.0f - 0.4f;
    const std::vector<uint32_t> offsets = {0, 3, 5};
    std::vector<float> got(5 * H), want(5 * H);
    ExpertWorkspace ws;
    REQUIRE(run_experts(assembled, x, 5, offsets, {}, got, ws).ok());
    REQUIRE(run_experts(expected, x, 5, offsets, {}, want, ws).ok());
    CHECK(got == want);
  }
}
