// Costs of the element-wise kernels of a layer: RMSNorm and residual adds.
// RMSNorm over `rows` x `width`: reads x and writes y (BF16), reads the weight; ~4 flops per
// element (square, sum, scale, weight). Residual add: reads two rows, writes one.
#pragma once

#include <cstdint>

#include "models/cost/cost.h"

namespace moe::models::cost {

KernelCost rmsnorm_cost(uint64_t rows, uint64_t width);
KernelCost residual_add_cost(uint64_t rows, uint64_t width);

}  // namespace moe::models::cost
