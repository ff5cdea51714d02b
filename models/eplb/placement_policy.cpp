// EPLB-style policies: replicate (greedy on load per replica), pack (LPT with slot limits and
// the one-replica-per-rank rule, repaired by a move when the rule blocks), label packs by
// overlap with the current map. Sizes are small (hundreds of experts, hundreds of ranks), so
// plain vectors and linear scans; a layer takes well under a millisecond at 384 x 384.
#include "models/eplb/placement_policy.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>

#include "runtime/base/check.h"
#include "runtime/base/strformat.h"

namespace moe::models::eplb {

namespace {

struct Item {
  uint32_t id = 0;       // expert (or group) id
  double weight = 0.0;   // load this replica carries
};

// Replica counts for items of load w over `slots` slots (>= w.size()), at most max_replicas
// each: every spare slot to the item with the most load per replica. Items of zero load get
// no extra replica (the slot stays empty).
std::vector<uint32_t> replicate(std::span<const double> w, uint32_t slots, uint32_t max_replicas) {
  std::vector<uint32_t> count(w.size(), 1);
  uint64_t spare = slots - w.size();
  using Key = std::pair<double, int64_t>;  // (load per replica, -index): max first, low index on ties
  std::priority_queue<Key> heap;
  for (size_t i = 0; i < w.size(); ++i)
    if (w[i] > 0.0 && max_replicas > 1) heap.push({w[i], -int64_t(i)});
  while (spare > 0 && !heap.empty()) {
    const size_t i = size_t(-heap.top().second);
    heap.pop();
    ++count[i];
    --spare;
    if (count[i] < max_replicas) heap.push({w[i] / count[i], -int64_t(i)});
  }
  return count;
}

// Packs items onto num_packs packs of `capacity` items, no two items of one id in a pack,
// balancing the packs' weight sums (LPT). Precondition: items.size() <= num_packs * capacity
// and no id appears more than num_packs times.
std::vector<std::vector<Item>> pack_items(std::vector<Item> items, uint32_t num_packs, uint32_t capacity) {
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.weight != b.weight ? a.weight > b.weight : a.id < b.id;
  });
  std::vector<std::vector<Item>> packs(num_packs);
  std::vector<double> load(num_packs, 0.0);
  auto holds = [&](uint32_t p, uint32_t id) {
    for (const Item& x : packs[p])
      if (x.id == id) return true;
    return false;
  };
  for (const Item& it : items) {
    int64_t best = -1;
    for (uint32_t p = 0; p < num_packs; ++p) {
      if (packs[p].size() >= capacity || holds(p, it.id)) continue;
      if (best < 0 || load[p] < load[best] ||
          (load[p] == load[best] && packs[p].size() < packs[best].size()))
        best = p;
    }
    if (best < 0) {
      // Every pack with room holds this id. Take the lightest such pack r, and a full pack q
      // without the id: move an item x of q (whose id r lacks) to r, and put this one on q.
      // x exists: r holds this id and fewer than capacity items, q holds capacity distinct
      // ids other than this one, so not all of them can be on r.
      int64_t r = -1;
      for (uint32_t p = 0; p < num_packs; ++p)
        if (packs[p].size() < capacity && (r < 0 || load[p] < load[r])) r = p;
      MOE_ASSERT(r >= 0);
      int64_t bq = -1, bx = -1;
      double best_peak = 0.0;
      for (uint32_t q = 0; q < num_packs; ++q) {
        if (holds(q, it.id)) continue;
        for (size_t x = 0; x < packs[q].size(); ++x) {
          if (holds(uint32_t(r), packs[q][x].id)) continue;
          const double peak = std::max(load[r] + packs[q][x].weight,
                                       load[q] - packs[q][x].weight + it.weight);
          if (bq < 0 || peak < best_peak) {
            bq = q;
            bx = int64_t(x);
            best_peak = peak;
          }
        }
      }
      MOE_ASSERT(bq >= 0);
      const Item moved = packs[bq][bx];
      packs[bq].erase(packs[bq].begin() + bx);
      load[bq] -= moved.weight;
      packs[r].push_back(moved);
      load[r] += moved.weight;
      best = bq;
    }
    packs[best].push_back(it);
    load[best] += it.weight;
  }
  return packs;
}

// Greedy assignment of packs to targets maximising overlap (overlap[p * n + t]); packs with no
// overlap take the remaining targets in order. Returns target index per pack.
std::vector<uint32_t> label_by_overlap(const std::vector<uint32_t>& overlap, uint32_t n) {
  struct Pair {
    uint32_t overlap, pack, target;
  };
  std::vector<Pair> pairs;
  for (uint32_t p = 0; p < n; ++p)
    for (uint32_t t = 0; t < n; ++t)
      if (overlap[uint64_t{p} * n + t] > 0) pairs.push_back({overlap[uint64_t{p} * n + t], p, t});
  std::sort(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) {
    if (a.overlap != b.overlap) return a.overlap > b.overlap;
    return a.pack != b.pack ? a.pack < b.pack : a.target < b.target;
  });
  std::vector<int64_t> of_pack(n, -1);
  std::vector<bool> taken(n, false);
  for (const Pair& x : pairs) {
    if (of_pack[x.pack] >= 0 || taken[x.target]) continue;
    of_pack[x.pack] = x.target;
    taken[x.target] = true;
  }
  uint32_t next = 0;
  std::vector<uint32_t> out(n);
  for (uint32_t p = 0; p < n; ++p) {
    if (of_pack[p] < 0) {
      while (taken[next]) ++next;
      of_pack[p] = next;
      taken[next] = true;
    }
    out[p] = uint32_t(of_pack[p]);
  }
  return out;
}

// Replicates `experts` (ids, with loads) over `ranks` (S slots each) and packs them there.
// Appends (expert, rank) pairs to `out`.
void place_within(std::span<const double> load, const std::vector<uint32_t>& experts,
                  const std::vector<uint32_t>& ranks, uint32_t slots_per_rank,
                  const ic::ExpertMap* current,
                  std::vector<std::pair<uint32_t, uint32_t>>& out) {
  const uint32_t n = static_cast<uint32_t>(ranks.size());
  std::vector<double> w(experts.size());
  for (size_t i = 0; i < experts.size(); ++i) w[i] = load[experts[i]];
  const std::vector<uint32_t> count = replicate(w, n * slots_per_rank, n);
  std::vector<Item> items;
  for (size_t i = 0; i < experts.size(); ++i)
    for (uint32_t c = 0; c < count[i]; ++c) items.push_back({experts[i], w[i] / count[i]});
  const std::vector<std::vector<Item>> packs = pack_items(std::move(items), n, slots_per_rank);
  std::vector<uint32_t> label(n);
  for (uint32_t p = 0; p < n; ++p) label[p] = p;
  if (current != nullptr) {
    std::vector<int64_t> index_of_rank(current->num_ranks(), -1);
    for (uint32_t t = 0; t < n; ++t) index_of_rank[ranks[t]] = t;
    std::vector<uint32_t> overlap(uint64_t{n} * n, 0);
    for (uint32_t p = 0; p < n; ++p)
      for (const Item& it : packs[p])
        for (uint32_t r : current->replicas(it.id))
          if (index_of_rank[r] >= 0) ++overlap[uint64_t{p} * n + uint64_t(index_of_rank[r])];
    label = label_by_overlap(overlap, n);
  }
  for (uint32_t p = 0; p < n; ++p)
    for (const Item& it : packs[p]) out.push_back({it.id, ranks[label[p]]});
}

Status check_shape(std::span<const double> load, const PlacementShape& s) {
  const char* bad = nullptr;
  if (s.num_experts == 0 || s.num_ranks == 0 || s.slots_per_rank == 0) bad = "experts, ranks and slots must be >= 1";
  else if (uint64_t{s.num_ranks} * s.slots_per_rank < s.num_experts) bad = "fewer slots than experts";
  else if (load.size() != s.num_experts) bad = "the load vector's size is not the expert count";
  else if (!s.rank_node.empty() && s.rank_node.size() != s.num_ranks) bad = "rank_node's size is not the rank count";
  else if (s.num_groups == 0 || s.num_experts % s.num_groups != 0) bad = "num_groups does not divide the experts";
  if (bad != nullptr)
    return make_error(StatusCode::kInvalidArgument,
                      "expert placement: %s (%u experts, %u ranks x %u slots, %zu loads, %zu "
                      "rank nodes, %u groups)", bad, s.num_experts, s.num_ranks, s.slots_per_rank,
                      load.size(), s.rank_node.size(), s.num_groups);
  for (size_t e = 0; e < load.size(); ++e)
    if (!std::isfinite(load[e]) || load[e] < 0.0)
      return make_error(StatusCode::kInvalidArgument,
                        "expert placement: load of expert %zu is %g (must be finite and >= 0)", e, load[e]);
  return ok_status();
}

}  // namespace

const char* policy_name(Policy policy) {
  return policy == Policy::kHierarchical ? "hierarchical" : "global";
}

PlacementShape placement_shape(const dev::Topology& topology, std::span<const dev::NpuId> npus,
                               uint32_t num_experts, uint32_t num_groups,
                               uint32_t redundant_experts) {
  PlacementShape s;
  s.num_experts = num_experts;
  s.num_ranks = static_cast<uint32_t>(npus.size());
  s.num_groups = num_groups;
  if (s.num_ranks > 0)
    s.slots_per_rank = static_cast<uint32_t>((uint64_t{num_experts} + redundant_experts + s.num_ranks - 1) / s.num_ranks);
  for (dev::NpuId npu : npus)
    s.rank_node.push_back(npu < topology.num_npus() ? topology.npus[npu].node : 0);
  return s;
}

StatusOr<PolicyResult> rebalance_layer(std::span<const double> load, const PlacementShape& shape,
                                       Policy policy, const ic::ExpertMap* current) {
  MOE_TRY(check_shape(load, shape));
  if (current != nullptr &&
      (current->num_experts() != shape.num_experts || current->num_ranks() != shape.num_ranks))
    current = nullptr;
  const uint32_t E = shape.num_experts, R = shape.num_ranks, S = shape.slots_per_rank;
  std::vector<std::pair<uint32_t, uint32_t>> pairs;  // (expert, rank)
  PolicyResult result;
  result.applied = Policy::kGlobal;

  // Nodes in ascending id order, each with its ranks (ascending).
  std::map<uint32_t, std::vector<uint32_t>> node_ranks;
  for (uint32_t r = 0; r < R; ++r) node_ranks[shape.rank_node.empty() ? 0 : shape.rank_node[r]].push_back(r);
  const uint32_t N = static_cast<uint32_t>(node_ranks.size()), G = shape.num_groups;
  bool hierarchical = policy == Policy::kHierarchical && G % N == 0;
  for (const auto& [node, ranks] : node_ranks)
    if (ranks.size() != node_ranks.begin()->second.size()) hierarchical = false;

  if (hierarchical) {
    result.applied = Policy::kHierarchical;
    const uint32_t per_group = E / G;
    std::vector<std::vector<uint32_t>> nodes;
    std::vector<int64_t> node_index_of_rank(R, -1);
    for (const auto& [node, ranks] : node_ranks) {
      for (uint32_t r : ranks) node_index_of_rank[r] = int64_t(nodes.size());
      nodes.push_back(ranks);
    }
    // Groups onto nodes: G/N each, balancing group load.
    std::vector<Item> groups(G);
    for (uint32_t g = 0; g < G; ++g) {
      groups[g].id = g;
      for (uint32_t e = g * per_group; e < (g + 1) * per_group; ++e) groups[g].weight += load[e];
    }
    const std::vector<std::vector<Item>> node_packs = pack_items(groups, N, G / N);
    std::vector<uint32_t> node_label(N);
    for (uint32_t p = 0; p < N; ++p) node_label[p] = p;
    if (current != nullptr) {
      std::vector<uint32_t> overlap(uint64_t{N} * N, 0);
      for (uint32_t p = 0; p < N; ++p)
        for (const Item& g : node_packs[p])
          for (uint32_t e = g.id * per_group; e < (g.id + 1) * per_group; ++e)
            for (uint32_t r : current->replicas(e)) ++overlap[uint64_t{p} * N + uint64_t(node_index_of_rank[r])];
      node_label = label_by_overlap(overlap, N);
    }
    for (uint32_t p = 0; p < N; ++p) {
      std::vector<uint32_t> experts;
      for (const Item& g : node_packs[p])
        for (uint32_t e = g.id * per_group; e < (g.id + 1) * per_group; ++e) experts.push_back(e);
      std::sort(experts.begin(), experts.end());
      // E/N experts over (R/N) * S slots: fits because R * S >= E.
      place_within(load, experts, nodes[node_label[p]], S, current, pairs);
    }
  } else {
    std::vector<uint32_t> experts(E), ranks(R);
    for (uint32_t e = 0; e < E; ++e) experts[e] = e;
    for (uint32_t r = 0; r < R; ++r) ranks[r] = r;
    place_within(load, experts, ranks, S, current, pairs);
  }
  std::sort(pairs.begin(), pairs.end());
  result.map = ic::ExpertMap(E, R);
  for (const auto& [e, r] : pairs) MOE_TRY(result.map.add_replica(e, r));
  MOE_TRY(result.map.validate());
  return result;
}

StatusOr<std::vector<ic::ExpertMap>> rebalance(const std::vector<std::vector<double>>& loads,
                                               const PlacementShape& shape, Policy policy,
                                               std::span<const ic::ExpertMap> current) {
  if (!current.empty() && current.size() != loads.size())
    return make_error(StatusCode::kInvalidArgument,
                      "expert placement: %zu current maps for %zu layers of loads", current.size(),
                      loads.size());
  std::vector<ic::ExpertMap> out;
  out.reserve(loads.size());
  for (size_t m = 0; m < loads.size(); ++m) {
    auto r = rebalance_layer(loads[m], shape, policy, current.empty() ? nullptr : &current[m]);
    if (!r.ok()) return Status(r.status()).with_context(strformat("MoE layer %zu", m));
    out.push_back(std::move(r).value().map);
  }
  return out;
}

StatusOr<std::vector<ic::ExpertMap>> transition_stages(const ic::ExpertMap& from,
                                                       const ic::ExpertMap& to,
                                                       uint32_t num_stages) {
  if (from.num_experts() != to.num_experts() || from.num_ranks() != to.num_ranks() || num_stages == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "expert transition: from %u experts over %u ranks to %u over %u in %u stages",
                      from.num_experts(), from.num_ranks(), to.num_experts(), to.num_ranks(),
                      num_stages);
  MOE_TRY(from.validate());
  MOE_TRY(to.validate());
  // Changing experts, weighted by the replicas they add (a removal-only change weighs 1).
  std::vector<Item> changing;
  for (uint32_t e = 0; e < to.num_experts(); ++e) {
    std::vector<uint32_t> a = from.replicas(e), b = to.replicas(e);
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a == b) continue;
    uint32_t added = 0;
    for (uint32_t r : b) added += std::binary_search(a.begin(), a.end(), r) ? 0 : 1;
    changing.push_back({e, double(std::max(added, 1u))});
  }
  const uint32_t stages = static_cast<uint32_t>(std::min<size_t>(num_stages, changing.size()));
  std::vector<ic::ExpertMap> out;
  if (stages == 0) return out;
  // Distinct ids: pack_items is plain LPT here; capacity allows any split.
  const std::vector<std::vector<Item>> groups =
      pack_items(changing, stages, static_cast<uint32_t>(changing.size()));
  std::vector<uint32_t> stage_of(to.num_experts(), UINT32_MAX);  // UINT32_MAX: unchanged
  for (uint32_t k = 0; k < stages; ++k)
    for (const Item& it : groups[k]) stage_of[it.id] = k;
  for (uint32_t k = 0; k < stages; ++k) {
    ic::ExpertMap map(to.num_experts(), to.num_ranks());
    for (uint32_t e = 0; e < to.num_experts(); ++e) {
      const bool moved = stage_of[e] != UINT32_MAX && stage_of[e] <= k;
      for (uint32_t r : (moved || stage_of[e] == UINT32_MAX ? to : from).replicas(e))
        MOE_TRY(map.add_replica(e, r));
    }
    out.push_back(std::move(map));
  }
  return out;
}

}  // namespace moe::models::eplb
