// Rotary-embedding cost: an in-place vector pass (see cost_rope.h).
#include "models/cost/cost_rope.h"

namespace moe::models::cost {

KernelCost rope_cost(uint64_t tokens, uint64_t heads, uint64_t rope_dim) {
  const double elems = double(tokens) * double(heads) * double(rope_dim);
  // Angles (cos, sin in FP32) for each token's position: tokens x rope_dim x 4 bytes.
  const double table = double(tokens) * double(rope_dim) * 4.0;
  return {"rope", 3.0 * elems, 2.0 * elems * kActivationBytes + table, dev::KernelClass::kVector,
          dev::Precision::kBf16};
}

}  // namespace moe::models::cost
