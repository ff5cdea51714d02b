// The expert map (see moe_dispatch_map.h). Small vectors; local indexes are computed on
// demand (dispatch resolves them once per call into its own tables).
#include "interconnect/moe_dispatch_map.h"

#include <algorithm>
#include <cmath>

namespace moe::ic {

ExpertMap::ExpertMap(uint32_t num_experts, uint32_t num_ranks)
    : num_experts_(num_experts), num_ranks_(num_ranks), routed_(num_experts) {}

ExpertMap ExpertMap::uniform(uint32_t num_experts, uint32_t num_ranks) {
  ExpertMap m(num_experts, num_ranks);
  if (num_ranks == 0) return m;
  for (uint32_t e = 0; e < num_experts; ++e)
    m.routed_[e].push_back(static_cast<uint32_t>(uint64_t{e} * num_ranks / num_experts));
  return m;
}

Status ExpertMap::add_replica(uint32_t expert, uint32_t rank) {
  if (expert >= num_experts_)
    return make_error(StatusCode::kInvalidArgument,
                      "add_replica: expert %u out of range (the map has %u routed experts)", expert,
                      num_experts_);
  if (rank >= num_ranks_)
    return make_error(StatusCode::kInvalidArgument,
                      "add_replica: rank %u out of range (the map has %u ranks)", rank, num_ranks_);
  std::vector<uint32_t>& r = routed_[expert];
  if (std::find(r.begin(), r.end(), rank) != r.end())
    return make_error(StatusCode::kInvalidArgument,
                      "add_replica: expert %u already has a replica on rank %u", expert, rank);
  r.push_back(rank);
  return ok_status();
}

Status ExpertMap::add_shared_expert(const std::vector<uint32_t>& ranks, float weight,
                                    uint32_t* index) {
  if (ranks.empty())
    return make_error(StatusCode::kInvalidArgument, "add_shared_expert: no replica rank given");
  if (!std::isfinite(weight))
    return make_error(StatusCode::kInvalidArgument, "add_shared_expert: weight is not finite");
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] >= num_ranks_)
      return make_error(StatusCode::kInvalidArgument,
                        "add_shared_expert: rank %u out of range (the map has %u ranks)", ranks[i],
                        num_ranks_);
    if (std::find(ranks.begin(), ranks.begin() + i, ranks[i]) != ranks.begin() + i)
      return make_error(StatusCode::kInvalidArgument, "add_shared_expert: rank %u given twice",
                        ranks[i]);
  }
  if (index != nullptr) *index = static_cast<uint32_t>(shared_.size());
  shared_.push_back({ranks, weight});
  return ok_status();
}

Status ExpertMap::validate() const {
  if (num_experts_ == 0 || num_ranks_ == 0)
    return make_error(StatusCode::kFailedPrecondition,
                      "expert map: %u routed experts over %u ranks (both must be >= 1)",
                      num_experts_, num_ranks_);
  for (uint32_t e = 0; e < num_experts_; ++e)
    if (routed_[e].empty())
      return make_error(StatusCode::kFailedPrecondition,
                        "expert map: routed expert %u has no replica", e);
  return ok_status();
}

std::vector<LocalExpert> ExpertMap::local_experts(uint32_t rank) const {
  std::vector<LocalExpert> out;
  for (uint32_t e = 0; e < num_experts_; ++e)
    if (std::find(routed_[e].begin(), routed_[e].end(), rank) != routed_[e].end())
      out.push_back({false, e});
  for (uint32_t s = 0; s < shared_.size(); ++s)
    if (std::find(shared_[s].ranks.begin(), shared_[s].ranks.end(), rank) != shared_[s].ranks.end())
      out.push_back({true, s});
  return out;
}

int ExpertMap::local_index(uint32_t rank, bool shared, uint32_t expert) const {
  const std::vector<LocalExpert> locals = local_experts(rank);
  for (size_t i = 0; i < locals.size(); ++i)
    if (locals[i].shared == shared && locals[i].expert == expert) return static_cast<int>(i);
  return -1;
}

}  // namespace moe::ic
