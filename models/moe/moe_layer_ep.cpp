// One MoE layer, expert-parallel path over interconnect dispatch and combine (see
// moe_layer.h for the contract and how it agrees with the single-host path).
//
// Design notes:
//  - Each rank routes its own tokens with the shared router (same logits as the single-host
//    path, so the same experts), converts them to BF16 for dispatch, and the dispatch
//    carries them in the buffer's format.
//  - A rank reads each received slot once (dequantised to FP32) and runs its local experts
//    in ONE grouped call on the receive layout: expert j's rows are
//    rows[expert_offsets[j]..[j+1]), each naming its slot; output row i is what combine
//    expects for row i (combine applies the routing weights).
//  - Shared experts are computed at home from the FP32 activations and added after combine
//    (one replicated copy of their weights; the map carries routed experts only).
//  - The simulation drives every rank from this thread, rank by rank; a real deployment
//    runs each rank's part on its own NPU.
#include "models/moe/moe_layer.h"

#include <algorithm>

#include "interconnect/quant_int8.h"
#include "runtime/base/check.h"

namespace moe::models {

StatusOr<std::unique_ptr<MoeLayerEp>> MoeLayerEp::create(
    const ModelConfig& config, const RouterWeights& router, std::span<const ExpertWeights> shared,
    const ic::ExpertMap& map, std::span<const std::vector<ExpertWeights>> rank_experts,
    ExpertPrecision precision) {
  std::unique_ptr<MoeLayerEp> layer(new MoeLayerEp());
  MOE_TRY(layer->init(config, router, shared, precision));
  MOE_TRY(map.validate());
  if (map.num_experts() != config.num_experts)
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer '%s': the expert map has %u experts, the config %u",
                      config.name.c_str(), map.num_experts(), config.num_experts);
  if (map.num_shared() != 0)
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer '%s': the expert map has %u shared experts; this layer computes "
                      "shared experts at each token's home, so the map must hold routed experts "
                      "only",
                      config.name.c_str(), map.num_shared());
  if (rank_experts.size() != map.num_ranks())
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer '%s': expert weights for %zu ranks, the map has %u",
                      config.name.c_str(), rank_experts.size(), map.num_ranks());
  layer->map_ = map;
  layer->banks_.reserve(map.num_ranks());
  for (uint32_t r = 0; r < map.num_ranks(); ++r) {
    const size_t want = map.local_experts(r).size();
    if (rank_experts[r].size() != want)
      return make_error(StatusCode::kInvalidArgument,
                        "moe layer '%s': rank %u: %zu experts' weights given, the map puts %zu "
                        "there",
                        config.name.c_str(), r, rank_experts[r].size(), want);
    auto bank = ExpertBank::create(config.hidden, config.expert_intermediate, rank_experts[r],
                                   precision);
    if (!bank.ok())
      return Status(bank.status()).with_context(strformat("rank %u local experts", r));
    layer->banks_.push_back(std::move(bank).value());
  }
  const uint32_t R = map.num_ranks();
  layer->routing_.resize(R);
  layer->tokens_bf16_.resize(R);
  layer->received_.resize(R);
  layer->expert_out_.resize(R);
  return layer;
}

Status MoeLayerEp::check_buffer(const ic::MoeBuffer& buffer,
                                std::span<const std::span<const float>> x,
                                std::span<const std::span<float>> out) const {
  const ic::MoeBufferConfig& c = buffer.config();
  if (buffer.mode() != ic::Mode::kFunctional)
    return make_error(StatusCode::kFailedPrecondition,
                      "moe layer ep forward: the buffer is in timing mode (no payload); the "
                      "layer's math needs a functional buffer");
  if (c.hidden != config_.hidden || c.max_topk < config_.top_k ||
      buffer.num_ranks() != map_.num_ranks())
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer ep forward: buffer hidden %u, max_topk %u, %u ranks; the layer "
                      "needs hidden %u, top_k %u, %u ranks",
                      c.hidden, c.max_topk, buffer.num_ranks(), config_.hidden, config_.top_k,
                      map_.num_ranks());
  if (x.size() != map_.num_ranks() || out.size() != map_.num_ranks())
    return make_error(StatusCode::kInvalidArgument,
                      "moe layer ep forward: %zu inputs and %zu outputs for %u ranks", x.size(),
                      out.size(), map_.num_ranks());
  for (uint32_t r = 0; r < x.size(); ++r)
    if (x[r].size() % config_.hidden != 0 || out[r].size() != x[r].size() ||
        x[r].size() / config_.hidden > c.max_tokens_per_rank)
      return make_error(StatusCode::kInvalidArgument,
                        "moe layer ep forward: rank %u: x has %zu values, out %zu (hidden %u, at "
                        "most %u tokens)",
                        r, x[r].size(), out[r].size(), config_.hidden, c.max_tokens_per_rank);
  return ok_status();
}

Status MoeLayerEp::forward(ic::MoeBuffer& buffer, std::span<const std::span<const float>> x,
                           std::span<const std::span<float>> out) {
  MOE_TRY(check_buffer(buffer, x, out));
  const uint32_t R = map_.num_ranks(), H = config_.hidden;
  std::vector<ic::DispatchInput> inputs(R);
  for (uint32_t r = 0; r < R; ++r) {
    const uint32_t n = static_cast<uint32_t>(x[r].size() / H);
    MOE_TRY(route_tokens(x[r], n, &routing_[r]));
    tokens_bf16_[r].resize(x[r].size());
    for (size_t i = 0; i < x[r].size(); ++i) tokens_bf16_[r][i] = ic::float_to_bf16(x[r][i]);
    inputs[r] = {n, tokens_bf16_[r], routing_[r].topk_ids, routing_[r].topk_weights};
  }
  auto handle = ic::moe_dispatch(buffer, map_, inputs, config_.top_k);
  if (!handle.ok()) return Status(handle.status()).with_context("moe layer ep: dispatch");
  handle_ = std::move(handle).value();

  std::vector<std::span<const float>> expert_spans(R);
  for (uint32_t r = 0; r < R; ++r) {
    const ic::RankReceive& rr = handle_.recv[r];
    if (rr.experts.size() != banks_[r].size())
      return make_error(StatusCode::kInternal,
                        "moe layer ep: rank %u received for %zu local experts, it holds %u", r,
                        rr.experts.size(), banks_[r].size());
    received_[r].resize(uint64_t{rr.num_slots} * H);
    for (uint32_t s = 0; s < rr.num_slots; ++s)
      MOE_TRY(ic::read_received_token(buffer, handle_, r, s,
                                      std::span(received_[r]).subspan(uint64_t{s} * H, H)));
    src_rows_.resize(rr.num_rows());
    for (uint32_t i = 0; i < rr.num_rows(); ++i) src_rows_[i] = rr.rows[i].slot;
    expert_out_[r].resize(uint64_t{rr.num_rows()} * H);
    MOE_TRY(run_experts(banks_[r], received_[r], rr.num_slots, rr.expert_offsets, src_rows_,
                        expert_out_[r], ws_, &KernelWorkers::shared()));
    expert_spans[r] = expert_out_[r];
  }
  Status s = ic::moe_combine(buffer, handle_, expert_spans, out);
  if (!s.ok()) return s.with_context("moe layer ep: combine");
  for (uint32_t r = 0; r < R; ++r)
    MOE_TRY(add_shared(x[r], static_cast<uint32_t>(x[r].size() / H), out[r]));
  return ok_status();
}

}  // namespace moe::models
