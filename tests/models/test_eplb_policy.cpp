// EPLB policies: every map they produce is a valid placement (slots respected, every expert
// placed, no rank holding two replicas of one expert), hot experts get the replicas, the
// hierarchical policy keeps each expert group on one node, and skewed (Zipf) loads end far
// better balanced than on the contiguous layout. Also the decayed load window.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "firmware-sim/presets.h"
#include "models/eplb/expert_load.h"
#include "models/eplb/imbalance.h"
#include "models/eplb/placement_policy.h"

using namespace moe;
using namespace moe::models::eplb;

namespace {

// Zipf(s) loads over n experts in a seeded random order (hot experts scattered, as real
// routing does), scaled to `total` tokens.
std::vector<double> zipf_loads(uint32_t n, double s, uint64_t seed, double total = 1e6) {
  std::vector<uint32_t> order(n);
  for (uint32_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<double> load(n);
  double sum = 0;
  for (uint32_t k = 0; k < n; ++k) sum += 1.0 / std::pow(k + 1.0, s);
  for (uint32_t k = 0; k < n; ++k) load[order[k]] = total / std::pow(k + 1.0, s) / sum;
  return load;
}

// The invariants every placement must hold.
void check_placement(const ic::ExpertMap& map, const PlacementShape& shape) {
  REQUIRE(map.validate().ok());
  REQUIRE(map.num_experts() == shape.num_experts);
  REQUIRE(map.num_ranks() == shape.num_ranks);
  for (uint32_t r = 0; r < shape.num_ranks; ++r) {
    const auto local = map.local_experts(r);
    CHECK(local.size() <= shape.slots_per_rank);
    std::set<uint32_t> ids;
    for (const auto& l : local) ids.insert(l.expert);
    CHECK(ids.size() == local.size());  // no expert twice on one rank
  }
  for (uint32_t e = 0; e < shape.num_experts; ++e) CHECK(!map.replicas(e).empty());
}

uint32_t total_replicas(const ic::ExpertMap& map) {
  uint32_t n = 0;
  for (uint32_t e = 0; e < map.num_experts(); ++e) n += static_cast<uint32_t>(map.replicas(e).size());
  return n;
}

}  // namespace

TEST_CASE("models.eplb: global policy on Zipf loads over 384 experts and 16 ranks") {
  const dev::Topology topo = sim::make_preset("n16").value();
  std::vector<dev::NpuId> npus(16);
  for (uint32_t i = 0; i < 16; ++i) npus[i] = i;
  const PlacementShape shape = placement_shape(topo, npus, 384, 8, 32);  // 26 slots per rank
  CHECK(shape.slots_per_rank == 26);
  for (uint64_t seed : {1, 2, 3}) {
    const std::vector<double> load = zipf_loads(384, 1.0, seed);
    const ic::ExpertMap before = ic::ExpertMap::uniform(384, 16);
    auto r = rebalance_layer(load, shape, Policy::kGlobal);
    REQUIRE(r.ok());
    CHECK(r.value().applied == Policy::kGlobal);
    check_placement(r.value().map, shape);
    CHECK(total_replicas(r.value().map) == 16 * 26);  // every spare slot used (all loads > 0)
    const double ib_before = imbalance(load, before), ib_after = imbalance(load, r.value().map);
    MESSAGE("zipf seed " << seed << ": imbalance " << ib_before << " -> " << ib_after);
    CHECK(ib_before > 1.5);
    CHECK(ib_after < 1.10);
    CHECK(ib_after < ib_before / 1.4);
    // The hottest expert holds the most replicas; a cold one has one.
    const uint32_t hot = uint32_t(std::max_element(load.begin(), load.end()) - load.begin());
    const uint32_t cold = uint32_t(std::min_element(load.begin(), load.end()) - load.begin());
    for (uint32_t e = 0; e < 384; ++e) CHECK(r.value().map.replicas(hot).size() >= r.value().map.replicas(e).size());
    CHECK(r.value().map.replicas(hot).size() > 1);
    CHECK(r.value().map.replicas(cold).size() == 1);
  }
}

TEST_CASE("models.eplb: a few very hot experts are spread over many ranks, never twice on one") {
  // 3 experts carry 90% of the load: each wants many replicas; at most one per rank.
  std::vector<double> load(64, 1.0);
  load[5] = 300;
  load[17] = 200;
  load[40] = 100;
  PlacementShape shape;
  shape.num_experts = 64;
  shape.num_ranks = 8;
  shape.slots_per_rank = 10;  // 16 spare slots
  auto r = rebalance_layer(load, shape, Policy::kGlobal);
  REQUIRE(r.ok());
  check_placement(r.value().map, shape);
  CHECK(r.value().map.replicas(5).size() == 8);  // capped at one per rank
  CHECK(r.value().map.replicas(17).size() >= 4);
  CHECK(imbalance(load, r.value().map) < imbalance(load, ic::ExpertMap::uniform(64, 8)) / 2);
}

TEST_CASE("models.eplb: hierarchical policy keeps expert groups on one node") {
  const dev::Topology topo = sim::make_preset("n16").value();  // 2 nodes of 8 NPUs
  std::vector<dev::NpuId> npus(16);
  for (uint32_t i = 0; i < 16; ++i) npus[i] = i;
  const PlacementShape shape = placement_shape(topo, npus, 384, 8, 32);
  REQUIRE(std::set<uint32_t>(shape.rank_node.begin(), shape.rank_node.end()).size() == 2);
  const std::vector<double> load = zipf_loads(384, 1.0, 7);
  auto r = rebalance_layer(load, shape, Policy::kHierarchical);
  REQUIRE(r.ok());
  CHECK(r.value().applied == Policy::kHierarchical);
  const ic::ExpertMap& map = r.value().map;
  check_placement(map, shape);
  // Every replica of every expert of a group lies on one node.
  for (uint32_t g = 0; g < 8; ++g) {
    std::set<uint32_t> nodes;
    for (uint32_t e = g * 48; e < (g + 1) * 48; ++e)
      for (uint32_t rank : map.replicas(e)) nodes.insert(shape.rank_node[rank]);
    CHECK(nodes.size() == 1);
  }
  // Four groups per node.
  std::vector<uint32_t> experts_on_node(2, 0);
  for (uint32_t e = 0; e < 384; ++e) ++experts_on_node[shape.rank_node[map.replicas(e)[0]]];
  CHECK(experts_on_node[0] == 192);
  CHECK(experts_on_node[1] == 192);
  const double ib = imbalance(load, map), ib_uniform = imbalance(load, ic::ExpertMap::uniform(384, 16));
  MESSAGE("hierarchical imbalance " << ib_uniform << " -> " << ib);
  CHECK(ib < ib_uniform / 1.4);

  // 48 nodes do not divide 8 groups (cm384): the global policy runs instead.
  const dev::Topology big = sim::make_preset("cm384").value();
  std::vector<dev::NpuId> all(384);
  for (uint32_t i = 0; i < 384; ++i) all[i] = i;
  const PlacementShape wide = placement_shape(big, all, 384, 8, 96);
  auto w = rebalance_layer(zipf_loads(384, 1.2, 3), wide, Policy::kHierarchical);
  REQUIRE(w.ok());
  CHECK(w.value().applied == Policy::kGlobal);
  check_placement(w.value().map, wide);
  CHECK(imbalance(zipf_loads(384, 1.2, 3), w.value().map) < imbalance(zipf_loads(384, 1.2, 3), ic::ExpertMap::uniform(384, 384)) / 2);
}

TEST_CASE("models.eplb: labelling by the current map keeps unchanged placements in place") {
  PlacementShape shape;
  shape.num_experts = 384;
  shape.num_ranks = 8;
  shape.slots_per_rank = 52;
  const std::vector<double> load = zipf_loads(384, 1.0, 11);
  auto first = rebalance_layer(load, shape, Policy::kGlobal);
  REQUIRE(first.ok());
  // The same loads again, given the map in use: nothing needs to move.
  auto again = rebalance_layer(load, shape, Policy::kGlobal, &first.value().map);
  REQUIRE(again.ok());
  CHECK(replicas_added(first.value().map, again.value().map) == 0);
  // Slightly drifted loads: far fewer replicas move than with blind labelling.
  std::vector<double> drift = load;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> jitter(0.9, 1.1);
  for (double& x : drift) x *= jitter(rng);
  const ic::ExpertMap uniform = ic::ExpertMap::uniform(384, 8);
  auto aware = rebalance_layer(drift, shape, Policy::kGlobal, &first.value().map);
  auto blind = rebalance_layer(drift, shape, Policy::kGlobal);
  REQUIRE(aware.ok());
  REQUIRE(blind.ok());
  check_placement(aware.value().map, shape);
  CHECK(imbalance(drift, aware.value().map) == doctest::Approx(imbalance(drift, blind.value().map)));
  CHECK(replicas_added(first.value().map, aware.value().map) <=
        replicas_added(first.value().map, blind.value().map));
  // Whole-model rebalance: one map per layer.
  auto maps = rebalance({load, drift}, shape, Policy::kHierarchical);
  REQUIRE(maps.ok());
  REQUIRE(maps.value().size() == 2);
  check_placement(maps.value()[1], shape);
  (void)uniform;
}

TEST_CASE("models.eplb: bad shapes and loads are refused naming the field") {
  PlacementShape shape;
  shape.num_experts = 16;
  shape.num_ranks = 4;
  shape.slots_per_rank = 3;  // 12 slots < 16 experts
  std::vector<double> load(16, 1.0);
  auto r = rebalance_layer(load, shape, Policy::kGlobal);
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find("fewer slots than experts") != std::string::npos);
  shape.slots_per_rank = 4;
  CHECK(rebalance_layer(std::vector<double>(15, 1.0), shape, Policy::kGlobal).status().code() ==
        StatusCode::kInvalidArgument);
  load[3] = -1;
  auto neg = rebalance_layer(load, shape, Policy::kGlobal);
  CHECK(neg.status().message().find("expert 3") != std::string::npos);
  load[3] = NAN;
  CHECK(!rebalance_layer(load, shape, Policy::kGlobal).ok());
  load[3] = 1;
  shape.rank_node = {0, 0, 1};
  CHECK(rebalance_layer(load, shape, Policy::kHierarchical).status().message().find("rank_node") != std::string::npos);
  shape.rank_node.clear();
  shape.num_groups = 5;
  CHECK(!rebalance_layer(load, shape, Policy::kHierarchical).ok());
  // Zero load everywhere: a valid map, one replica each, nothing spare placed.
  shape.num_groups = 1;
  auto zero = rebalance_layer(std::vector<double>(16, 0.0), shape, Policy::kGlobal);
  REQUIRE(zero.ok());
  check_placement(zero.value().map, shape);
  CHECK(total_replicas(zero.value().map) == 16);
  CHECK(imbalance(std::vector<double>(16, 0.0), zero.value().map) == 1.0);
}

TEST_CASE("models.eplb: the load tracker folds deltas into a decayed window") {
  ExpertLoadTracker t(2, 4, 0.5);
  std::vector<std::vector<uint64_t>> c = {{10, 0, 0, 0}, {0, 0, 0, 4}};
  REQUIRE(t.observe(c).ok());
  CHECK(t.window()[0][0] == 10.0);
  c[0][0] = 14;  // +4
  c[0][1] = 8;   // +8
  REQUIRE(t.observe(c).ok());
  CHECK(t.window()[0][0] == doctest::Approx(9.0));  // 0.5 * 10 + 4
  CHECK(t.window()[0][1] == doctest::Approx(8.0));
  CHECK(t.window()[1][3] == doctest::Approx(2.0));  // decayed, nothing new
  CHECK(t.observations() == 2);
  c[0][0] = 13;  // backwards: refused, nothing changes
  CHECK(t.observe(c).code() == StatusCode::kInvalidArgument);
  CHECK(t.window()[0][0] == doctest::Approx(9.0));
  CHECK(t.observe({{1, 2, 3, 4}}).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("models.eplb: a transition in stages moves a share of the replicas per stage") {
  PlacementShape shape;
  shape.num_experts = 384;
  shape.num_ranks = 8;
  shape.slots_per_rank = 56;
  const ic::ExpertMap from = ic::ExpertMap::uniform(384, 8);
  const ic::ExpertMap to = rebalance_layer(zipf_loads(384, 1.0, 21), shape, Policy::kGlobal, &from).value().map;
  const uint32_t total = replicas_added(from, to);
  REQUIRE(total > 40);
  auto stages = transition_stages(from, to, 4);
  REQUIRE(stages.ok());
  REQUIRE(stages.value().size() == 4);
  const ic::ExpertMap* prev = &from;
  uint32_t sum = 0;
  for (const ic::ExpertMap& m : stages.value()) {
    REQUIRE(m.validate().ok());
    for (uint32_t r = 0; r < 8; ++r) {  // still one replica per rank at most
      const auto local = m.local_experts(r);
      std::set<uint32_t> ids;
      for (const auto& l : local) ids.insert(l.expert);
      CHECK(ids.size() == local.size());
    }
    const uint32_t added = replicas_added(*prev, m);
    CHECK(added <= total / 4 + 8);  // balanced: about a quarter each
    sum += added;
    prev = &m;
  }
  CHECK(sum == total);  // every replica arrives once
  CHECK(replicas_added(stages.value().back(), to) == 0);
  CHECK(replicas_added(to, stages.value().back()) == 0);
  // Nothing to change: no stage; bad arguments refused.
  CHECK(transition_stages(to, to, 3).value().empty());
  CHECK(transition_stages(from, to, 0).status().code() == StatusCode::kInvalidArgument);
  CHECK(!transition_stages(from, ic::ExpertMap::uniform(384, 4), 2).ok());
}
