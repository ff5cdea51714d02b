// RMSNorm and residual-add costs: bandwidth-bound vector kernels (see cost_norm.h).
#include "models/cost/cost_norm.h"

namespace moe::models::cost {

KernelCost rmsnorm_cost(uint64_t rows, uint64_t width) {
  const double elems = double(rows) * double(width);
  return {"rmsnorm", 4.0 * elems, 2.0 * elems * kActivationBytes + double(width) * kActivationBytes,
          dev::KernelClass::kVector, dev::Precision::kBf16};
}

KernelCost residual_add_cost(uint64_t rows, uint64_t width) {
  const double elems = double(rows) * double(width);
  return {"residual_add", elems, 3.0 * elems * kActivationBytes, dev::KernelClass::kVector,
          dev::Precision::kBf16};
}

}  // namespace moe::models::cost
