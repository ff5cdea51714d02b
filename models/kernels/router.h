// The MoE router: from gate logits to each token's top-k experts and their weights.
//
// For each token (logits: one row of num_experts values, usually x W_gate^T):
//   1. scores s_e = softmax(logits)_e (over ALL routed experts) or sigmoid(logits_e)
//      (RouterConfig::score);
//   2. selection scores c_e = s_e + bias_e (bias: the per-expert load-balancing correction,
//      DeepSeek-V3's e_score_correction_bias; zero when absent). The bias only CHOOSES
//      experts; weights always come from the unbiased s_e;
//   3. group-limited routing (num_groups > 1, DeepSeek-V3): experts are split into
//      num_groups contiguous groups of E / num_groups; a group's score is the sum of its two
//      best c_e (its best alone when a group has one expert); the topk_groups best groups
//      are kept and experts of the other groups are excluded;
//   4. the top_k experts by c_e among those kept, in descending order of c_e;
//   5. weights w_k = s_{e_k}; if normalize_topk, divided by their sum; then multiplied by
//      routed_scaling (always: 1.0 leaves them as they are).
// Mixtral's convention (softmax over all 8, top-2, renormalised) is score = kSoftmax,
// normalize_topk = true, one group, no bias.
// Ties are broken deterministically: among equal c_e the lower expert id wins, among equal
// group scores the lower group id. Scores are computed in float from the logits, so equal
// logits give exactly equal scores.
//
// router_logits() computes x W^T with a fixed summation order in double, rounded to float:
// a token's logits (and so its routing) do not depend on the other tokens of the batch or
// on how a batch is split over ranks (a BLAS may sum in an order that depends on the shape).
//
// Thread-safety: pure functions; the output object is the caller's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/model_config.h"
#include "runtime/base/status.h"

namespace moe::models {

struct RouterConfig {
  uint32_t num_experts = 0;
  uint32_t top_k = 0;
  RouterScore score = RouterScore::kSoftmax;
  bool normalize_topk = true;
  float routed_scaling = 1.0f;
  uint32_t num_groups = 1;
  uint32_t topk_groups = 1;

  static RouterConfig from_model(const ModelConfig& config);
};

// What the router chose. Sizes: num_tokens x top_k for ids and weights (row-major),
// num_experts for expert_counts (tokens routed to each expert: the balancer's load
// statistics for this call).
struct RouterOutput {
  uint32_t num_tokens = 0;
  uint32_t top_k = 0;
  std::vector<int32_t> topk_ids;
  std::vector<float> topk_weights;
  std::vector<uint32_t> expert_counts;
};

// Checks the config: experts and top_k nonzero, top_k <= E, groups dividing E, topk_groups
// in [1, num_groups], enough experts in topk_groups groups for top_k, finite scaling.
Status validate_router(const RouterConfig& config);

// Routes num_tokens tokens. logits: num_tokens x num_experts; bias: num_experts values or
// empty. *out is resized (its vectors reused: no allocation when the shapes repeat) and
// written only on success. kInvalidArgument for a bad config, mismatched sizes or a
// non-finite logit or bias (naming the token and expert).
Status route(const RouterConfig& config, std::span<const float> logits, uint32_t num_tokens,
             std::span<const float> bias, RouterOutput* out);

// logits[t][e] = sum_h x[t][h] * gate[e][h] (double accumulation in h order, rounded to
// float). x: num_tokens x hidden, gate: num_experts x hidden, logits: num_tokens x num_experts.
Status router_logits(std::span<const float> x, uint32_t num_tokens, uint32_t hidden,
                     std::span<const float> gate, uint32_t num_experts, std::span<float> logits);

}  // namespace moe::models
