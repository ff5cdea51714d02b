// One MoE layer's forward pass: router, routed SwiGLU experts, shared experts.
//
//   out[t] = sum_k w_{t,k} * expert_{e_{t,k}}(x_t) + sum_s shared_s(x_t)
// with (e, w) from the router (models/kernels/router.h; logits = x W_gate^T in a fixed
// double-precision order, so a token's routing never depends on its batch) and the experts
// of models/kernels/expert_ffn.h. Shared experts have weight 1 (DeepSeek-V3, Pangu).
//
// Two paths, one result:
//  - MoeLayer: a single host holds every expert. Route, group the (token, expert) pairs by
//    expert, run all experts in one grouped call, sum each token's outputs in top-k order
//    (FP32), add the shared experts.
//  - MoeLayerEp: expert parallelism over an interconnect MoeBuffer and ExpertMap. Each
//    rank routes its own tokens (its "home" tokens), moe_dispatch carries them (BF16 or
//    INT8, the buffer's dispatch format) to the ranks holding their experts, each rank runs
//    its local experts on what it received (one grouped call on the receive layout),
//    moe_combine brings the weighted outputs home (the buffer's combine format), and the
//    shared experts are added at home.
//    Shared experts: computed LOCALLY at each token's home rank from the FP32 activation,
//    with one replicated copy of their weights (DeepSeek's deployment replicates the shared
//    expert on every rank; computing it at home moves no bytes for it). So the ExpertMap
//    given must hold routed experts only (num_shared() == 0).
//    Agreement with MoeLayer: identical routing (same logits); expert inputs differ only by
//    the dispatch format's rounding (BF16: none when x is BF16-representable, as a model's
//    activations are; INT8: per-token quantisation, |err| <= max|x|/254); the output by
//    the combine format's rounding (FP32: summation order only, ~1e-6 relative; BF16:
//    2^-8 relative per partial and on the sum) plus summation order.
//
// Weights are plain views (ExpertWeights, spans of BF16 values; the router gate and bias in
// FP32): the caller (a weight store) owns them; create() copies what it needs (FP32 or INT8
// working copies), so the views may be released afterwards.
// Functional mode only: a timing-mode buffer is refused (kFailedPrecondition); cost
// functions live in models/cost/.
// Thread-safety: a layer object is driven by one thread at a time (it owns workspaces).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "interconnect/moe_buffer.h"
#include "interconnect/moe_dispatch.h"
#include "interconnect/moe_dispatch_map.h"
#include "models/kernels/expert_ffn.h"
#include "models/kernels/router.h"
#include "models/model_config.h"

namespace moe::models {

// The router's weights: gate [num_experts][hidden] FP32; bias: num_experts values (the
// selection-only correction) when the config has router_bias, else empty.
struct RouterWeights {
  std::span<const float> gate;
  std::span<const float> bias;
};

// What every MoE layer shares between the two paths: the router (weights copied), the
// shared experts (prepared), the shapes.
class MoeLayerCommon {
 public:
  const ModelConfig& config() const { return config_; }
  const RouterConfig& router_config() const { return router_; }
  ExpertPrecision precision() const { return precision_; }

 protected:
  Status init(const ModelConfig& config, const RouterWeights& router,
              std::span<const ExpertWeights> shared, ExpertPrecision precision);
  // Routes num_tokens tokens of x into *out (logits buffer reused).
  Status route_tokens(std::span<const float> x, uint32_t num_tokens, RouterOutput* out);
  // out += sum_s shared_s(x) over num_tokens tokens.
  Status add_shared(std::span<const float> x, uint32_t num_tokens, std::span<float> out);
  // add_shared in two halves, so the shared experts can run in a job with other experts:
  // prepare_shared sizes the buffers and describes the run (false: no shared expert or no
  // token, nothing to run); after running it, sum_shared adds the results into out.
  bool prepare_shared(std::span<const float> x, uint32_t num_tokens, ExpertCall* call);
  void sum_shared(uint32_t num_tokens, std::span<float> out) const;

  ModelConfig config_;
  RouterConfig router_;
  ExpertPrecision precision_ = ExpertPrecision::kBf16;
  std::vector<float> gate_, bias_;
  ExpertBank shared_;
  ExpertWorkspace ws_;
  std::vector<float> logits_, shared_out_;
  std::vector<uint32_t> shared_rows_, shared_offsets_;
};

struct MoeLayerWeights {
  RouterWeights router;
  std::vector<ExpertWeights> routed;  // config.num_experts, by expert id
  std::vector<ExpertWeights> shared;  // config.num_shared_experts
};

class MoeLayer : public MoeLayerCommon {
 public:
  // kInvalidArgument for a config the router refuses, or weights of the wrong count or
  // size (naming the expert and matrix).
  static StatusOr<std::unique_ptr<MoeLayer>> create(const ModelConfig& config,
                                                    const MoeLayerWeights& weights,
                                                    ExpertPrecision precision);
  // x: num_tokens x hidden; out: num_tokens x hidden (overwritten). The routing of the
  // call stays readable through last_routing() until the next call.
  Status forward(std::span<const float> x, uint32_t num_tokens, std::span<float> out);
  const RouterOutput& last_routing() const { return routing_; }

 private:
  ExpertBank routed_;
  RouterOutput routing_;
  ExpertGrouping grouping_;
  std::vector<float> expert_out_;
};

class MoeLayerEp : public MoeLayerCommon {
 public:
  // map: where the routed experts live (validated, no shared experts, see the header note);
  // rank_experts[r]: the weights of rank r's local experts in ExpertMap local order
  // (map.local_experts(r)), so each rank holds only its own. kInvalidArgument naming the
  // rank whose list has the wrong length, or the expert whose weights are mis-sized.
  static StatusOr<std::unique_ptr<MoeLayerEp>> create(
      const ModelConfig& config, const RouterWeights& router,
      std::span<const ExpertWeights> shared, const ic::ExpertMap& map,
      std::span<const std::vector<ExpertWeights>> rank_experts, ExpertPrecision precision);

  // x[r]: rank r's home tokens (n_r x hidden, n_r <= the buffer's max_tokens_per_rank);
  // out[r]: n_r x hidden, overwritten. The buffer must be functional, with this layer's
  // hidden size, max_topk >= top_k and num_ranks == the map's. Errors of dispatch and
  // combine are returned as they come (with context).
  Status forward(ic::MoeBuffer& buffer, std::span<const std::span<const float>> x,
                 std::span<const std::span<float>> out);
  // The last forward's routing of rank r's tokens, and its dispatch handle.
  const RouterOutput& last_routing(uint32_t rank) const { return routing_[rank]; }
  const ic::DispatchHandle& last_handle() const { return handle_; }
  const ic::ExpertMap& map() const { return map_; }

 private:
  Status check_buffer(const ic::MoeBuffer& buffer, std::span<const std::span<const float>> x,
                      std::span<const std::span<float>> out) const;
  ic::ExpertMap map_;
  std::vector<ExpertBank> banks_;  // per rank
  std::vector<RouterOutput> routing_;
  std::vector<std::vector<uint16_t>> tokens_bf16_;
  std::vector<std::vector<float>> received_, expert_out_;
  std::vector<uint32_t> src_rows_;
  ic::DispatchHandle handle_;
};

}  // namespace moe::models
