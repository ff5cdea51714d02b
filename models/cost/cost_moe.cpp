// Router and grouped-expert costs (see cost_moe.h): per expert the exact product counts,
// summed into one grouped kernel per matrix.
#include "models/cost/cost_moe.h"

#include <cmath>

#include "models/cost/cost_linear.h"

namespace moe::models::cost {

KernelCost router_gate_cost(uint64_t tokens, uint64_t hidden, uint64_t num_experts) {
  return linear_cost(tokens, hidden, num_experts, dev::Precision::kBf16, "router_gate");
}

KernelCost router_topk_cost(uint64_t tokens, uint64_t num_experts, uint64_t top_k) {
  const double scores = double(tokens) * double(num_experts);
  const double flops = scores * (8.0 + std::log2(double(top_k) + 1.0));
  const double bytes = 2.0 * scores * 4.0 + double(num_experts) * 4.0 +  // scores, bias
                       double(tokens) * double(top_k) * 8.0;              // ids, weights
  return {"router_topk", flops, bytes, dev::KernelClass::kVector, dev::Precision::kFp32};
}

double expert_weight_bytes(uint64_t hidden, uint64_t width, dev::Precision precision) {
  return linear_weight_bytes(hidden, 2 * width, precision) +
         linear_weight_bytes(width, hidden, precision);
}

ExpertFfnCost grouped_expert_ffn_cost(std::span<const uint32_t> rows_per_expert,
                                      uint64_t hidden, uint64_t width,
                                      dev::Precision precision) {
  ExpertFfnCost c;
  c.up_gate = {"expert_up_gate", 0, 0, dev::KernelClass::kMatmul, precision};
  c.swiglu = {"expert_swiglu", 0, 0, dev::KernelClass::kVector, dev::Precision::kBf16};
  c.down = {"expert_down", 0, 0, dev::KernelClass::kMatmul, precision};
  for (uint32_t rows : rows_per_expert) {
    if (rows == 0) continue;
    ++c.active_experts;
    c.rows += rows;
    c.up_gate += linear_cost(rows, hidden, 2 * width, precision);
    c.down += linear_cost(rows, width, hidden, precision);
    const double elems = double(rows) * double(width);
    c.swiglu.flops += 6.0 * elems;  // sigmoid (~4), product with gate, product with up
    c.swiglu.hbm_bytes += 3.0 * elems * kActivationBytes;
    c.weight_bytes += expert_weight_bytes(hidden, width, precision);
  }
  return c;
}

ExpertFfnCost expert_ffn_cost(uint64_t rows, uint64_t hidden, uint64_t width,
                              dev::Precision precision) {
  const uint32_t r[1] = {static_cast<uint32_t>(rows)};
  return grouped_expert_ffn_cost(r, hidden, width, precision);
}

}  // namespace moe::models::cost
