// One MoE layer, single-host path, and the parts both paths share (see moe_layer.h).
//
// Design notes:
//  - The router gate and bias are copied once at create (FP32); logits use router_logits'
//    fixed summation order, which is what makes the EP path route exactly as this one.
//  - Routed experts run as one grouped call over the expert-major layout of
//    group_by_expert; each token then sums its top-k rows in top-k order in FP32 (the
//    reduction combine performs on the EP path, in its own order).
//  - Shared experts are one bank run on every token (src_rows = 0..n-1 per shared expert).
//    On the single-host path they run in the same job as the routed experts (one
//    run_experts over both banks), so all experts balance over the kernel workers together;
//    their outputs are still added after the routed sum, in the same order as before.
//  - Every buffer is a member reused across calls: no allocation in steady state.
#include "models/moe/moe_layer.h"

#include "runtime/base/check.h"

#include <algorithm>

namespace moe::models {

Status MoeLayerCommon::init(const ModelConfig& config, const RouterWeights& router,
                            std::span<const ExpertWeights> shared, ExpertPrecision precision) {
  config_ = config;
  router_ = RouterConfig::from_model(config);
  precision_ = precision;
  MOE_TRY(validate_router(router_));
  const uint64_t E = config.num_experts, H = config.hidden;
  if (H == 0 || config.expert_intermediate == 0)
    return make_error(StatusCode::kInvalidArgument, "moe layer '%s': hidden %u, inter %u",
                      config.name.c_str(), config.hidden, config.expert_intermediate);
  if (router.gate.size() != E * H)
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer '%s': router gate has %zu values, expected %llu x %llu",
                      config.name.c_str(), router.gate.size(), static_cast<unsigned long long>(E),
                      static_cast<unsigned long long>(H));
  const uint64_t want_bias = config.router_bias ? E : 0;
  if (router.bias.size() != want_bias)
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer '%s': router bias has %zu values, expected %llu",
                      config.name.c_str(), router.bias.size(),
                      static_cast<unsigned long long>(want_bias));
  if (shared.size() != config.num_shared_experts)
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer '%s': %zu shared experts given, the config has %u",
                      config.name.c_str(), shared.size(), config.num_shared_experts);
  gate_.assign(router.gate.begin(), router.gate.end());
  bias_.assign(router.bias.begin(), router.bias.end());
  auto bank = ExpertBank::create(config.hidden, config.expert_intermediate, shared, precision);
  if (!bank.ok()) return Status(bank.status()).with_context("shared experts");
  shared_ = std::move(bank).value();
  return ok_status();
}

Status MoeLayerCommon::route_tokens(std::span<const float> x, uint32_t num_tokens,
                                    RouterOutput* out) {
  logits_.resize(uint64_t{num_tokens} * config_.num_experts);
  MOE_TRY(router_logits(x, num_tokens, config_.hidden, gate_, config_.num_experts, logits_));
  return route(router_, logits_, num_tokens, bias_, out);
}

bool MoeLayerCommon::prepare_shared(std::span<const float> x, uint32_t num_tokens,
                                    ExpertCall* call) {
  const uint32_t S = shared_.size();
  if (S == 0 || num_tokens == 0) return false;
  const uint64_t H = config_.hidden, n = num_tokens;
  shared_rows_.resize(S * n);
  shared_offsets_.resize(S + 1);
  for (uint32_t s = 0; s <= S; ++s) shared_offsets_[s] = static_cast<uint32_t>(s * n);
  for (uint32_t s = 0; s < S; ++s)
    for (uint32_t t = 0; t < n; ++t) shared_rows_[s * n + t] = t;
  shared_out_.resize(S * n * H);
  *call = ExpertCall{&shared_, x, num_tokens, shared_offsets_,
                     S == 1 ? std::span<const uint32_t>() : std::span<const uint32_t>(shared_rows_),
                     std::span<float>(shared_out_).first(S * n * H)};
  return true;
}

void MoeLayerCommon::sum_shared(uint32_t num_tokens, std::span<float> out) const {
  const uint64_t H = config_.hidden, n = num_tokens;
  for (uint32_t s = 0; s < shared_.size(); ++s) {
    const float* so = shared_out_.data() + s * n * H;
    float* o = out.data();
    for (uint64_t i = 0; i < n * H; ++i) o[i] += so[i];
  }
}

Status MoeLayerCommon::add_shared(std::span<const float> x, uint32_t num_tokens,
                                  std::span<float> out) {
  ExpertCall call;
  if (!prepare_shared(x, num_tokens, &call)) return ok_status();
  MOE_TRY(run_experts(std::span<const ExpertCall>(&call, 1), ws_, &KernelWorkers::shared()));
  sum_shared(num_tokens, out);
  return ok_status();
}

StatusOr<std::unique_ptr<MoeLayer>> MoeLayer::create(const ModelConfig& config,
                                                     const MoeLayerWeights& weights,
                                                     ExpertPrecision precision) {
  std::unique_ptr<MoeLayer> layer(new MoeLayer());
  MOE_TRY(layer->init(config, weights.router, weights.shared, precision));
  if (weights.routed.size() != config.num_experts)
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer '%s': %zu routed experts given, the config has %u",
                      config.name.c_str(), weights.routed.size(), config.num_experts);
  auto bank =
      ExpertBank::create(config.hidden, config.expert_intermediate, weights.routed, precision);
  if (!bank.ok()) return Status(bank.status()).with_context("routed experts");
  layer->routed_ = std::move(bank).value();
  return layer;
}

Status MoeLayer::forward(std::span<const float> x, uint32_t num_tokens, std::span<float> out) {
  const uint64_t H = config_.hidden, K = config_.top_k;
  if (x.size() != num_tokens * H || out.size() != num_tokens * H)
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer forward: x has %zu and out %zu values, %u tokens x hidden %llu "
                      "need %llu",
                      x.size(), out.size(), num_tokens, static_cast<unsigned long long>(H),
                      static_cast<unsigned long long>(num_tokens * H));
  MOE_TRY(route_tokens(x, num_tokens, &routing_));
  MOE_TRY(group_by_expert(routing_.topk_ids, num_tokens, config_.top_k, config_.num_experts,
                          &grouping_));
  const uint32_t rows = grouping_.offsets.back();
  expert_out_.resize(uint64_t{rows} * H);
  // Routed and shared experts as one job, so they balance over the kernel workers together.
  ExpertCall calls[2] = {
      {&routed_, x, num_tokens, grouping_.offsets, grouping_.src_rows, expert_out_}, {}};
  const size_t num_calls = prepare_shared(x, num_tokens, &calls[1]) ? 2 : 1;
  MOE_TRY(run_experts(std::span<const ExpertCall>(calls, num_calls), ws_,
                      &KernelWorkers::shared()));
  for (uint32_t t = 0; t < num_tokens; ++t) {
    float* __restrict o = out.data() + t * H;
    std::fill(o, o + H, 0.0f);
    for (uint64_t k = 0; k < K; ++k) {
      const uint32_t row = grouping_.row_of_pair[t * K + k];
      const float w = routing_.topk_weights[t * K + k];
      const float* __restrict e = expert_out_.data() + uint64_t{row} * H;
      for (uint64_t h = 0; h < H; ++h) o[h] += w * e[h];
    }
  }
  if (num_calls == 2) sum_shared(num_tokens, out);
  return ok_status();
}

}  // namespace moe::models
