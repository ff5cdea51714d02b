// The load an expert placement puts on each EP rank, and its imbalance (max / mean).
//
// Model: a routed expert's tokens are split evenly over its replicas (the dispatch map sends
// a source's consecutive tokens round-robin over them, ic::ExpertMap::routed_rank), so a rank
// carries load[e] / replicas(e) of every expert e it holds. The imbalance of a placement is
// the busiest rank's load over the mean rank load: 1.0 is perfect; a step's expert phase
// waits for the busiest rank, so this ratio is the slowdown over a perfect placement.
// Plain functions on values; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "interconnect/moe_dispatch_map.h"

namespace moe::models::eplb {

// Expected tokens per rank (map.num_ranks() values). Precondition: load.size() ==
// map.num_experts() and every expert has a replica (map.validate()); experts without one
// contribute nothing.
std::vector<double> rank_loads(std::span<const double> load, const ic::ExpertMap& map);

// max / mean of rank_loads(load, map); 1.0 when the total load is 0.
double imbalance(std::span<const double> load, const ic::ExpertMap& map);

// Replicas (expert, rank) that `to` has and `from` lacks: what a re-placement from `from` to
// `to` must bring to ranks. Precondition: the maps have the same expert and rank counts.
uint32_t replicas_added(const ic::ExpertMap& from, const ic::ExpertMap& to);

}  // namespace moe::models::eplb
