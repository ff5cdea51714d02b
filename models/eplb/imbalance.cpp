// Rank loads under an expert map: each replica carries an equal share of its expert's load.
#include "models/eplb/imbalance.h"

#include <algorithm>
#include <numeric>

namespace moe::models::eplb {

std::vector<double> rank_loads(std::span<const double> load, const ic::ExpertMap& map) {
  std::vector<double> out(map.num_ranks(), 0.0);
  const uint32_t n = std::min<uint32_t>(map.num_experts(), static_cast<uint32_t>(load.size()));
  for (uint32_t e = 0; e < n; ++e) {
    const std::vector<uint32_t>& reps = map.replicas(e);
    if (reps.empty()) continue;
    const double share = load[e] / double(reps.size());
    for (uint32_t r : reps) out[r] += share;
  }
  return out;
}

double imbalance(std::span<const double> load, const ic::ExpertMap& map) {
  const std::vector<double> per_rank = rank_loads(load, map);
  if (per_rank.empty()) return 1.0;
  const double total = std::accumulate(per_rank.begin(), per_rank.end(), 0.0);
  if (total <= 0.0) return 1.0;
  const double mean = total / double(per_rank.size());
  return *std::max_element(per_rank.begin(), per_rank.end()) / mean;
}

uint32_t replicas_added(const ic::ExpertMap& from, const ic::ExpertMap& to) {
  uint32_t added = 0;
  for (uint32_t e = 0; e < to.num_experts(); ++e)
    for (uint32_t r : to.replicas(e)) {
      const std::vector<uint32_t>& old = from.replicas(e);
      if (std::find(old.begin(), old.end(), r) == old.end()) ++added;
    }
  return added;
}

}  // namespace moe::models::eplb
