// decode_at_target: the batch search with the simulations it ran kept.
#include "models/serving/decode_at_target.h"

#include <map>

#include "models/serving/batch_search.h"
#include "runtime/base/check.h"

namespace moe::models::serving {

StatusOr<DecodeAtTarget> decode_at_target(const ModelConfig& model, SimulateOptions options,
                                          double target_ns, uint32_t max_batch, bool bisect) {
  if (options.phase != Phase::kDecode) {
    return make_error(StatusCode::kInvalidArgument, "decode_at_target: the phase must be decode");
  }
  std::map<uint32_t, SimulateResult> runs;
  auto tpot_of = [&](uint32_t batch) -> StatusOr<double> {
    options.batch_per_npu = batch;
    MOE_TRY_ASSIGN(SimulateResult r, simulate(model, options));
    runs[batch] = r;
    return r.tpot_ns;
  };
  MOE_TRY_ASSIGN(BatchSearchResult found,
                 largest_batch_within(tpot_of, target_ns, max_batch, bisect));
  DecodeAtTarget out;
  out.target_ns = target_ns;
  out.batch = found.batch;
  out.evaluations = found.evaluations;
  MOE_ASSERT(runs.count(1) == 1);
  out.batch1 = runs[1];
  if (found.batch > 0) out.at_batch = runs[found.batch];
  return out;
}

}  // namespace moe::models::serving
