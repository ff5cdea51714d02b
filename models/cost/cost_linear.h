// Cost of a linear layer (a dense product y[m x n] = x[m x k] W[k x n]).
//
// FLOPs 2mnk. HBM bytes: the weight once (k x n x bytes of the precision; INT8 W8A8 also
// reads n FP32 per-channel scales), the input read and the output written as BF16 (an INT8
// kernel quantises its input on the fly and writes BF16). Class kMatmul: small m is bound by
// the weight read (the flat part of the calibration curve), large m by the FLOPs.
#pragma once

#include <cstdint>

#include "models/cost/cost.h"

namespace moe::models::cost {

KernelCost linear_cost(uint64_t m, uint64_t k, uint64_t n, dev::Precision precision,
                       std::string_view name = "linear");
// `batches` independent products of the same shape with their own weights (per-head
// products such as MLA's absorbed projections): batches x linear_cost(m, k, n).
KernelCost batched_linear_cost(uint64_t batches, uint64_t m, uint64_t k, uint64_t n,
                               dev::Precision precision, std::string_view name = "bmm");
// Bytes of a k x n weight at `precision`, scales included.
double linear_weight_bytes(uint64_t k, uint64_t n, dev::Precision precision);

}  // namespace moe::models::cost
