// Cost of rotary position embeddings applied in place to `tokens` x `heads` vectors of
// `rope_dim` elements (the rotary part only): reads and writes each element, ~3 flops per
// element (two products and a sum per rotated pair, plus the angle table read once).
#pragma once

#include <cstdint>

#include "models/cost/cost.h"

namespace moe::models::cost {

KernelCost rope_cost(uint64_t tokens, uint64_t heads, uint64_t rope_dim);

}  // namespace moe::models::cost
