// Linear-layer cost: 2mnk FLOPs, one weight read, BF16 activations (see cost_linear.h).
#include "models/cost/cost_linear.h"

namespace moe::models::cost {

double linear_weight_bytes(uint64_t k, uint64_t n, dev::Precision precision) {
  double bytes = double(k) * double(n) * weight_bytes_per_elem(precision);
  if (precision == dev::Precision::kInt8) bytes += double(n) * 4.0;  // per-channel scales
  return bytes;
}

KernelCost linear_cost(uint64_t m, uint64_t k, uint64_t n, dev::Precision precision,
                       std::string_view name) {
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const double bytes = linear_weight_bytes(k, n, precision) +
                       double(m) * (double(k) + double(n)) * kActivationBytes;
  return {name, flops, bytes, dev::KernelClass::kMatmul, precision};
}

KernelCost batched_linear_cost(uint64_t batches, uint64_t m, uint64_t k, uint64_t n,
                               dev::Precision precision, std::string_view name) {
  KernelCost one = linear_cost(m, k, n, precision, name);
  one.flops *= double(batches);
  one.hbm_bytes *= double(batches);
  return one;
}

}  // namespace moe::models::cost
