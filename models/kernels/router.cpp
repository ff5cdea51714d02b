// The MoE router (see router.h for the rules).
//
// Design notes:
//  - Selection is a linear scan per chosen expert with an explicit (score, id) order, so
//    ties are broken the documented way on every platform; E * top_k compares per token
//    (3,072 for 384 experts top-8) is far below the gate GEMM that produced the logits.
//  - Softmax subtracts the row maximum and sums in double; sigmoid is 1 / (1 + exp(-x)).
//    Both are computed in float per expert from the same logit, so equal logits give
//    bit-equal scores (what the tie rules rely on).
//  - The output vectors are resized, not reallocated, so a steady state allocates nothing.
#include "models/kernels/router.h"

#include "runtime/base/check.h"

#include <cmath>
#include <limits>

namespace moe::models {
namespace {

// a before b in selection order: higher score, then lower id.
inline bool better(float a, uint32_t ia, float b, uint32_t ib) {
  return a > b || (a == b && ia < ib);
}

}  // namespace

RouterConfig RouterConfig::from_model(const ModelConfig& c) {
  RouterConfig r;
  r.num_experts = c.num_experts;
  r.top_k = c.top_k;
  r.score = c.router_score;
  r.normalize_topk = c.normalize_topk;
  r.routed_scaling = c.routed_scaling;
  r.num_groups = c.num_groups;
  r.topk_groups = c.topk_groups;
  return r;
}

Status validate_router(const RouterConfig& c) {
  if (c.num_experts == 0 || c.top_k == 0 || c.top_k > c.num_experts)
    return make_error(StatusCode::kInvalidArgument,
                      "router: top_k %u with %u experts (need 1 <= top_k <= experts)", c.top_k,
                      c.num_experts);
  if (c.num_groups == 0 || c.num_experts % c.num_groups != 0)
    return make_error(StatusCode::kInvalidArgument,
                      "router: %u groups do not divide %u experts", c.num_groups, c.num_experts);
  if (c.topk_groups == 0 || c.topk_groups > c.num_groups)
    return make_error(StatusCode::kInvalidArgument, "router: topk_groups %u not in [1, %u]",
                      c.topk_groups, c.num_groups);
  if (uint64_t{c.topk_groups} * (c.num_experts / c.num_groups) < c.top_k)
    return make_error(StatusCode::kInvalidArgument,
                      "router: %u groups of %u experts hold fewer than top_k %u", c.topk_groups,
                      c.num_experts / c.num_groups, c.top_k);
  if (!std::isfinite(c.routed_scaling))
    return make_error(StatusCode::kInvalidArgument, "router: routed_scaling is not finite");
  return ok_status();
}

Status route(const RouterConfig& c, std::span<const float> logits, uint32_t num_tokens,
             std::span<const float> bias, RouterOutput* out) {
  MOE_TRY(validate_router(c));
  const uint32_t E = c.num_experts, K = c.top_k;
  if (logits.size() != uint64_t{num_tokens} * E)
    return make_error(StatusCode::kInvalidArgument,
                      "router: %zu logits for %u tokens x %u experts", logits.size(), num_tokens,
                      E);
  if (!bias.empty() && bias.size() != E)
    return make_error(StatusCode::kInvalidArgument, "router: %zu bias values for %u experts",
                      bias.size(), E);
  for (uint32_t e = 0; e < bias.size(); ++e)
    if (!std::isfinite(bias[e]))
      return make_error(StatusCode::kInvalidArgument, "router: bias of expert %u is not finite",
                        e);
  for (uint64_t i = 0; i < logits.size(); ++i)
    if (!std::isfinite(logits[i]))
      return make_error(StatusCode::kInvalidArgument,
                        "router: logit of token %llu expert %llu is not finite",
                        static_cast<unsigned long long>(i / E),
                        static_cast<unsigned long long>(i % E));

  out->num_tokens = num_tokens;
  out->top_k = K;
  out->topk_ids.resize(uint64_t{num_tokens} * K);
  out->topk_weights.resize(uint64_t{num_tokens} * K);
  out->expert_counts.assign(E, 0);
  const uint32_t G = c.num_groups, per_group = E / G;
  thread_local std::vector<float> score, select, group_score;
  thread_local std::vector<uint8_t> excluded, group_kept;
  score.resize(E);
  select.resize(E);
  excluded.resize(E);
  group_score.resize(G);
  group_kept.resize(G);
  const float kNone = -std::numeric_limits<float>::infinity();

  for (uint32_t t = 0; t < num_tokens; ++t) {
    const float* l = logits.data() + uint64_t{t} * E;
    if (c.score == RouterScore::kSoftmax) {
      float mx = l[0];
      for (uint32_t e = 1; e < E; ++e) mx = std::max(mx, l[e]);
      double sum = 0;
      for (uint32_t e = 0; e < E; ++e) sum += score[e] = std::exp(l[e] - mx);
      const float inv = static_cast<float>(1.0 / sum);
      for (uint32_t e = 0; e < E; ++e) score[e] *= inv;
    } else {
      for (uint32_t e = 0; e < E; ++e) score[e] = 1.0f / (1.0f + std::exp(-l[e]));
    }
    for (uint32_t e = 0; e < E; ++e) {
      select[e] = bias.empty() ? score[e] : score[e] + bias[e];
      excluded[e] = 0;
    }
    if (G > 1) {
      for (uint32_t g = 0; g < G; ++g) {
        float b1 = kNone, b2 = kNone;
        for (uint32_t e = g * per_group; e < (g + 1) * per_group; ++e) {
          if (select[e] > b1) {
            b2 = b1;
            b1 = select[e];
          } else if (select[e] > b2) {
            b2 = select[e];
          }
        }
        group_score[g] = per_group == 1 ? b1 : b1 + b2;
        group_kept[g] = 0;
      }
      for (uint32_t k = 0; k < c.topk_groups; ++k) {
        uint32_t best = G;
        for (uint32_t g = 0; g < G; ++g)
          if (!group_kept[g] && (best == G || better(group_score[g], g, group_score[best], best)))
            best = g;
        group_kept[best] = 1;
      }
      for (uint32_t e = 0; e < E; ++e) excluded[e] = !group_kept[e / per_group];
    }
    int32_t* ids = out->topk_ids.data() + uint64_t{t} * K;
    float* w = out->topk_weights.data() + uint64_t{t} * K;
    double wsum = 0;
    for (uint32_t k = 0; k < K; ++k) {
      uint32_t best = E;
      for (uint32_t e = 0; e < E; ++e)
        if (!excluded[e] && (best == E || better(select[e], e, select[best], best))) best = e;
      excluded[best] = 1;
      ids[k] = static_cast<int32_t>(best);
      w[k] = score[best];
      wsum += score[best];
      ++out->expert_counts[best];
    }
    const double norm = c.normalize_topk && wsum > 0 ? 1.0 / wsum : 1.0;
    for (uint32_t k = 0; k < K; ++k)
      w[k] = static_cast<float>(double(w[k]) * norm * double(c.routed_scaling));
  }
  return ok_status();
}

Status router_logits(std::span<const float> x, uint32_t num_tokens, uint32_t hidden,
                     std::span<const float> gate, uint32_t num_experts, std::span<float> logits) {
  if (x.size() != uint64_t{num_tokens} * hidden || gate.size() != uint64_t{num_experts} * hidden ||
      logits.size() != uint64_t{num_tokens} * num_experts)
    return make_error(StatusCode::kInvalidArgument,
                      "router_logits: sizes x %zu, gate %zu, logits %zu do not fit %u tokens, "
                      "hidden %u, %u experts",
                      x.size(), gate.size(), logits.size(), num_tokens, hidden, num_experts);
  for (uint32_t t = 0; t < num_tokens; ++t) {
    const float* xr = x.data() + uint64_t{t} * hidden;
    for (uint32_t e = 0; e < num_experts; ++e) {
      const float* g = gate.data() + uint64_t{e} * hidden;
      double acc = 0;
      for (uint32_t h = 0; h < hidden; ++h) acc += double(xr[h]) * double(g[h]);
      logits[uint64_t{t} * num_experts + e] = static_cast<float>(acc);
    }
  }
  return ok_status();
}

}  // namespace moe::models
