// Costs of the MoE parts of a layer: the router and the grouped SwiGLU expert FFN (routed
// experts, and with one group the shared expert or a dense FFN).
//
// Router: the gate product tokens x hidden x num_experts (BF16 weights, FP32 scores: kept
// BF16 here: the weight read dominates), then a vector top-k pass over the scores (sigmoid
// or softmax, group selection, top-k: ~(8 + log2 k) flops per score, scores read twice).
//
// Grouped expert FFN over the experts one die holds: rows_per_expert[j] tokens for expert
// j; each expert has up and gate (hidden x width each, stored as one hidden x 2 width
// matrix) and down (width x hidden). Three kernels:
//   up_gate  grouped product: sum_j 2 r_j hidden 2width FLOPs; the weights of every expert
//            with r_j > 0 (an expert no token chose is not read) plus its activations;
//   swiglu   vector: silu(gate) * up over sum_j r_j x width;
//   down     grouped product: sum_j 2 r_j width hidden FLOPs; weights and activations.
// One grouped kernel per matrix (as a grouped GEMM launches once): its time is the
// roofline of the summed FLOPs and bytes, so with few rows per expert it is the weight read
// at the calibrated streaming efficiency (flat in rows), and from the knee (~hundreds of rows
// per expert) the FLOPs at the calibrated fraction of peak.
#pragma once

#include <cstdint>
#include <span>

#include "models/cost/cost.h"

namespace moe::models::cost {

KernelCost router_gate_cost(uint64_t tokens, uint64_t hidden, uint64_t num_experts);
KernelCost router_topk_cost(uint64_t tokens, uint64_t num_experts, uint64_t top_k);

struct ExpertFfnCost {
  KernelCost up_gate;
  KernelCost swiglu;
  KernelCost down;
  uint64_t rows = 0;           // sum of rows_per_expert
  uint64_t active_experts = 0; // experts with at least one row
  double weight_bytes = 0;     // weights read (active experts only)
  double total() const { return up_gate.flops + swiglu.flops + down.flops; }
};

// `width`: the intermediate size each expert has on this die (the full width, or a share
// of it when an NPU splits its experts over its dies).
ExpertFfnCost grouped_expert_ffn_cost(std::span<const uint32_t> rows_per_expert,
                                      uint64_t hidden, uint64_t width,
                                      dev::Precision precision);
// One expert (shared expert, dense FFN) applied to `rows` tokens.
ExpertFfnCost expert_ffn_cost(uint64_t rows, uint64_t hidden, uint64_t width,
                              dev::Precision precision);
// Bytes of one expert's three matrices (hidden x width x 3) at `precision`.
double expert_weight_bytes(uint64_t hidden, uint64_t width, dev::Precision precision);

}  // namespace moe::models::cost
