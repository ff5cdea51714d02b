// Expert placement policies in the manner of DeepSeek's EPLB: from per-expert loads to an
// ic::ExpertMap per MoE layer, with redundant replicas of the hottest experts.
//
// Shape: num_ranks EP ranks, each with slots_per_rank physical expert slots
// (num_ranks * slots_per_rank >= num_experts). Every routed expert gets one replica; the
// spare slots hold extra replicas of the experts whose load per replica is highest. A slot
// may stay empty when no expert deserves it (zero load, or an expert already on every rank
// it may use). No rank holds two replicas of one expert (the dispatch map refuses that, and
// it would balance nothing).
//
// Policies:
//  - kGlobal: replicate over all ranks (greedy: each spare slot to the expert with the most
//    load per replica, at most one replica per rank), then pack the replicas onto the ranks
//    by longest-processing-time greedy (heaviest replica first, onto the least-loaded rank
//    with a free slot that does not hold the expert; when only ranks that hold it have free
//    slots, a replica of another expert moves over to make room: always possible).
//  - kHierarchical (DeepSeek's for prefill, where groups of experts are node-local): the
//    expert groups (ModelConfig::num_groups, experts [g*E/G, (g+1)*E/G)) are packed onto the
//    nodes, G/N groups per node, balancing group load; then, inside each node, the node's
//    experts are replicated over the node's slots and packed onto its ranks as kGlobal does.
//    Group-limited routing then keeps a token's traffic inside few nodes. Requires every node
//    to hold the same number of ranks and N to divide G; otherwise the global policy runs
//    (PolicyResult::applied says which ran).
// Migration-aware labelling: packs are interchangeable (ranks of a node are alike; nodes are
// alike), so when the current map is given, each pack is given to the rank (node) holding
// most of its replicas already (greedy on overlap), which keeps the bytes a re-placement
// moves small when loads drift slowly. Balance is unaffected.
//
// Deterministic: ties break by lower expert id, then lower rank. Plain functions on values;
// thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "interconnect/moe_dispatch_map.h"
#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::models::eplb {

enum class Policy : uint8_t { kGlobal, kHierarchical };
const char* policy_name(Policy policy);

struct PlacementShape {
  uint32_t num_experts = 0;
  uint32_t num_ranks = 0;
  uint32_t slots_per_rank = 0;      // physical expert slots per EP rank
  uint32_t num_groups = 1;          // expert groups (kHierarchical)
  std::vector<uint32_t> rank_node;  // node of each rank (kHierarchical); empty: one node
};

// The shape for EP ranks on `npus` (rank r is npus[r]) of `topology`: nodes from the
// topology, slots_per_rank = ceil((num_experts + redundant) / ranks).
PlacementShape placement_shape(const dev::Topology& topology, std::span<const dev::NpuId> npus,
                               uint32_t num_experts, uint32_t num_groups,
                               uint32_t redundant_experts);

struct PolicyResult {
  ic::ExpertMap map;
  Policy applied = Policy::kGlobal;  // kGlobal when kHierarchical did not fit the shape
};

// One layer. load: num_experts values (tokens, >= 0). current (optional): the map in use,
// for migration-aware labelling (same shape, else ignored). kInvalidArgument naming the field
// for a bad shape (no ranks, too few slots, a load of the wrong size, negative or not
// finite, rank_node of the wrong size, groups that do not divide the experts).
StatusOr<PolicyResult> rebalance_layer(std::span<const double> load, const PlacementShape& shape,
                                       Policy policy, const ic::ExpertMap* current = nullptr);

// Every layer: loads[m] for MoE layer m; current: empty or one map per layer.
StatusOr<std::vector<ic::ExpertMap>> rebalance(const std::vector<std::vector<double>>& loads,
                                               const PlacementShape& shape, Policy policy,
                                               std::span<const ic::ExpertMap> current = {});

// A transition from `from` to `to` in `num_stages` steps, so that no single re-placement
// (Engine::apply_expert_maps, one per step boundary) moves more than about 1/num_stages of
// the replicas: the experts whose replica set changes are split into num_stages groups
// balanced by replicas added (LPT); stage k's map gives the experts of groups <= k their
// replicas in `to` and the others theirs in `from`. Every stage map is valid (each expert
// has its full old or new set); a rank may briefly hold more than slots_per_rank replicas
// (the old experts it is about to give up and the new ones it gained). The last map equals
// `to` in replica sets. Fewer maps when fewer experts change than num_stages (none when
// nothing changes). kInvalidArgument for maps of different shapes or num_stages 0.
StatusOr<std::vector<ic::ExpertMap>> transition_stages(const ic::ExpertMap& from,
                                                       const ic::ExpertMap& to,
                                                       uint32_t num_stages);

}  // namespace moe::models::eplb
