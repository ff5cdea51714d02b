// The largest decode batch whose TPOT holds a target, by search over a TPOT function (the
// timing simulation's, models/simulate.h, or any other): batches 1, 2, 4, ... up to
// max_batch until one is over the target, then bisection between the last within and the
// first over. Assumes TPOT does not fall as the batch grows (the search is exact then).
// Calls tpot_ns at most about 2 log2(max_batch) times.
#pragma once

#include <cstdint>
#include <functional>

#include "runtime/base/check.h"
#include "runtime/base/status.h"

namespace moe::models::serving {

struct BatchSearchResult {
  uint32_t batch = 0;     // the largest batch within the target; 0: even batch 1 is over
  double tpot_ns = 0;     // at that batch
  double batch1_tpot_ns = 0;
  uint32_t evaluations = 0;
};

// tpot_ns(batch) -> modelled TPOT; its errors are returned. bisect = false stops after the
// doubling phase (a power of two: faster, less exact). kInvalidArgument for max_batch 0 or
// a target <= 0.
StatusOr<BatchSearchResult> largest_batch_within(const std::function<StatusOr<double>(uint32_t)>& tpot_ns,
                                                 double target_ns, uint32_t max_batch, bool bisect = true);

}  // namespace moe::models::serving
