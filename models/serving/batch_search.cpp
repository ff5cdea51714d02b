// largest_batch_within: doubling then bisection over a monotone TPOT function.
#include "models/serving/batch_search.h"

namespace moe::models::serving {

StatusOr<BatchSearchResult> largest_batch_within(const std::function<StatusOr<double>(uint32_t)>& tpot_ns,
                                                 double target_ns, uint32_t max_batch, bool bisect) {
  if (max_batch == 0 || !(target_ns > 0))
    return make_error(StatusCode::kInvalidArgument, "batch search: max_batch %u and target %g ns "
                      "must be positive", max_batch, target_ns);
  BatchSearchResult r;
  auto eval = [&](uint32_t b) -> StatusOr<double> {
    ++r.evaluations;
    return tpot_ns(b);
  };
  MOE_TRY_ASSIGN(r.batch1_tpot_ns, eval(1));
  if (r.batch1_tpot_ns > target_ns) return r;
  r.batch = 1;
  r.tpot_ns = r.batch1_tpot_ns;
  uint32_t over = 0;  // the smallest batch seen over the target; 0: none
  while (r.batch < max_batch) {
    const uint32_t b = r.batch * 2 > max_batch ? max_batch : r.batch * 2;
    MOE_TRY_ASSIGN(double t, eval(b));
    if (t > target_ns) {
      over = b;
      break;
    }
    r.batch = b;
    r.tpot_ns = t;
  }
  while (bisect && over > r.batch + 1) {
    const uint32_t mid = r.batch + (over - r.batch) / 2;
    MOE_TRY_ASSIGN(double t, eval(mid));
    if (t > target_ns) {
      over = mid;
    } else {
      r.batch = mid;
      r.tpot_ns = t;
    }
  }
  return r;
}

}  // namespace moe::models::serving
