// ExpertLoadTracker: deltas of cumulative counters folded into an exponential window.
#include "models/eplb/expert_load.h"

#include <algorithm>

namespace moe::models::eplb {

ExpertLoadTracker::ExpertLoadTracker(uint32_t num_layers, uint32_t num_experts, double decay)
    : decay_(std::clamp(decay, 0.0, 1.0)),
      last_(num_layers, std::vector<uint64_t>(num_experts, 0)),
      window_(num_layers, std::vector<double>(num_experts, 0.0)) {}

Status ExpertLoadTracker::observe(const std::vector<std::vector<uint64_t>>& cumulative) {
  if (cumulative.size() != last_.size())
    return make_error(StatusCode::kInvalidArgument,
                      "expert load: %zu layers observed, the tracker has %zu", cumulative.size(),
                      last_.size());
  for (size_t m = 0; m < cumulative.size(); ++m) {
    if (cumulative[m].size() != last_[m].size())
      return make_error(StatusCode::kInvalidArgument,
                        "expert load: layer %zu has %zu experts, the tracker %zu", m,
                        cumulative[m].size(), last_[m].size());
    for (size_t e = 0; e < cumulative[m].size(); ++e)
      if (cumulative[m][e] < last_[m][e])
        return make_error(StatusCode::kInvalidArgument,
                          "expert load: layer %zu expert %zu went back from %llu to %llu tokens "
                          "(counts from another engine?)", m, e,
                          static_cast<unsigned long long>(last_[m][e]),
                          static_cast<unsigned long long>(cumulative[m][e]));
  }
  for (size_t m = 0; m < cumulative.size(); ++m)
    for (size_t e = 0; e < cumulative[m].size(); ++e) {
      window_[m][e] = decay_ * window_[m][e] + double(cumulative[m][e] - last_[m][e]);
      last_[m][e] = cumulative[m][e];
    }
  ++observations_;
  return ok_status();
}

}  // namespace moe::models::eplb
