// DeviceWeights: a model's weights placed on the NPUs that run it, for the engine's kernels.
//
// Placement (what a deployment of DeepSeek-V3 does, at the built-in model's scale):
//  - every attention data-parallel (DP) rank holds a REPLICA of everything that is not a routed
//    expert: embedding, norms, attention projections, dense FFNs, the router (gate and bias),
//    the shared experts, the final norm and the LM head; BF16 (the bias F32) in its NPU's HBM,
//    one HBM block per replica;
//  - every expert-parallel (EP) rank holds the routed experts the ExpertMap puts there (its
//    replicas of hot experts included), one HBM block per MoE layer: per local expert its
//    gate [inter][hidden], up [inter][hidden] and down [hidden][inter], BF16.
// Bytes go from the weight store (models/weights/weight_store.h, random or safetensors) into
// HBM through each NPU's host-copy engine (a copy stream), block by block.
//
// How kernel bodies read them (functional mode, bodies on host cores):
//  - the replica's tensors straight from HBM (BF16 views through the host mapping: linear_bf16
//    converts panels as it goes);
//  - routed experts, the shared experts and the router gate through host WORKING COPIES built
//    once from the HBM-resident BF16: an ExpertBank per (MoE layer, EP rank) (FP32 for sgemm,
//    or INT8 + scales for W8A8), one shared-expert bank and one FP32 gate per MoE layer (the
//    router's logits are computed in a fixed double order from FP32; BF16 widens exactly).
//    They stand in for an NPU's matrix engine reading BF16/INT8 directly; the HBM copies are
//    what the device holds and what its memory statistics count.
//
// Shared experts: the checkpoint fuses the S shared experts into one SwiGLU MLP of width
// S * expert_intermediate (weight_spec.h); that MLP equals the sum of the S experts, so one
// bank expert of that width computes them.
//
// Ownership: DeviceWeights owns its HBM blocks (freed on destruction, before the Runtime
// closes) and working copies. Immutable after load() except through replace_experts() (the
// engine calls it between steps): const access from any thread while nothing re-places.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "interconnect/moe_dispatch_map.h"
#include "models/engine/hbm_block.h"
#include "models/kernels/expert_ffn.h"
#include "models/weights/weight_store.h"
#include "runtime/runtime.h"

namespace moe::models {

// One DP rank's replica: BF16 views into its HBM block (nullptr where the model has none).
struct ReplicaWeights {
  struct Layer {
    const uint16_t* input_norm = nullptr;   // [hidden]
    const uint16_t* post_norm = nullptr;    // [hidden]
    const uint16_t* q_proj = nullptr;       // [heads * head_dim][hidden]
    const uint16_t* k_proj = nullptr;       // [kv_heads * head_dim][hidden]
    const uint16_t* v_proj = nullptr;       // [kv_heads * head_dim][hidden]
    const uint16_t* o_proj = nullptr;       // [hidden][heads * head_dim]
    const uint16_t* q_norm = nullptr;       // [head_dim] (qk_norm)
    const uint16_t* k_norm = nullptr;       // [head_dim] (qk_norm)
    const uint16_t* mlp_gate = nullptr;     // dense layers: [dense_inter][hidden]
    const uint16_t* mlp_up = nullptr;       // dense layers: [dense_inter][hidden]
    const uint16_t* mlp_down = nullptr;     // dense layers: [hidden][dense_inter]
  };
  const uint16_t* embed = nullptr;          // [vocab][hidden]
  const uint16_t* final_norm = nullptr;     // [hidden]
  const uint16_t* lm_head = nullptr;        // [vocab][hidden] (the embedding when tied)
  std::vector<Layer> layers;
};

// One MoE layer's host working copies shared by every rank's kernel bodies.
struct MoeLayerWorking {
  std::vector<float> gate;  // router [num_experts][hidden], FP32
  std::vector<float> bias;  // [num_experts] or empty
  ExpertBank shared;        // one expert of width S * expert_intermediate; empty when S == 0
};

struct DevicePlacement {
  std::vector<dev::NpuId> npus;   // EP rank r is npus[r]
  std::vector<uint32_t> dp_ranks; // the EP ranks that are attention DP ranks, ascending
  ic::ExpertMap map;              // routed experts over the EP ranks (no shared experts), every
                                  // MoE layer at load (re-placement: DeviceWeights::layer_map)
  ExpertPrecision precision = ExpertPrecision::kBf16;
  // Each routed-expert replica on an HBM page of its own, so re-placement moves it by page
  // migration (the memory layer's remapping) instead of a copy; costs a page per replica.
  bool expert_own_pages = false;
};

// What one re-placement of routed experts did (DeviceWeights::replace_experts).
struct ExpertMoveStats {
  uint32_t replicas_copied = 0;    // new replicas written over the fabric from a kept one
  uint32_t replicas_migrated = 0;  // replicas whose page moved to their new NPU
  uint32_t replicas_freed = 0;     // replicas dropped
  uint32_t banks_rebuilt = 0;      // (MoE layer, rank) expert banks reassembled
  uint32_t working_copies_built = 0;  // host working copies converted (replicas new to a rank)
  uint64_t fabric_bytes = 0;       // bytes over the fabric: copies and migrated pages
  double modelled_ns = 0;          // modelled duration of the transfers (see replace_experts)
  // Wall time of the simulated copies (the fabric engines run on the host here) and of
  // building the host working copies (which stand in for the NPU's matrix engine reading
  // HBM: a device has no such step). The rest of the call is the runtime's own work.
  int64_t copy_wall_ns = 0;
  int64_t working_copy_wall_ns = 0;
};

// Called during load with (bytes done, bytes in all); never from another thread.
using LoadProgress = std::function<void(uint64_t done, uint64_t total)>;

class DeviceWeights {
 public:
  DeviceWeights();
  ~DeviceWeights();
  DeviceWeights(DeviceWeights&&) noexcept;
  DeviceWeights& operator=(DeviceWeights&&) noexcept;

  // The bytes load() puts in HBM for `placement` (BF16 replicas and expert blocks).
  static uint64_t hbm_bytes_needed(const ModelConfig& config, const DevicePlacement& placement);

  // Places `weights` as `placement` says. kInvalidArgument when the map's expert or rank count
  // disagrees with the config / NPU list, a DP rank is out of range, or the map holds shared
  // experts; weight-store errors (naming the tensor); HBM and copy errors (naming the NPU).
  static StatusOr<DeviceWeights> load(rt::Runtime& runtime, const ModelWeights& weights,
                                      const DevicePlacement& placement,
                                      const LoadProgress& progress = {});

  const ModelConfig& config() const;
  const DevicePlacement& placement() const;
  // Replica of DP rank index d (0 .. dp_ranks.size()-1).
  const ReplicaWeights& replica(uint32_t d) const;
  // MoE layer index m (0 .. num_moe_layers-1: layer num_dense_layers + m).
  const MoeLayerWorking& moe_layer(uint32_t m) const;
  // The local routed experts of EP rank r in MoE layer m (ExpertMap local order).
  const ExpertBank& experts(uint32_t m, uint32_t rank) const;
  // HBM bytes this object holds on EP rank r's NPU.
  uint64_t hbm_bytes_on_rank(uint32_t rank) const;
  // The expert map MoE layer m routes by now (placement().map until a re-placement).
  const ic::ExpertMap& layer_map(uint32_t m) const;

  // Re-places the routed experts: maps[m] becomes MoE layer m's map (engine_placement.cpp).
  // Per (layer, expert): a replica on a rank in both maps stays; a rank that loses the
  // expert while another gains it hands its replica over (own-page blocks: the page migrates,
  // keeping its global address; packed blocks: a fabric copy to a new block, the old one
  // freed); other gaining ranks get a fabric copy of a kept replica; other losing ranks free
  // theirs. Host working copies are built for replicas new to a rank; a rank's kept replicas
  // keep theirs (its expert bank is reassembled). Not concurrent
  // with a step (the caller runs it between steps). Atomic: on error (kInvalidArgument for a
  // map of the wrong shape or invalid; HBM or copy errors naming the NPU) the placement in
  // use is unchanged. modelled_ns: the copies' fabric-engine time (the slowest NPU) plus the
  // migrations' bytes over the busiest NPU's fabric bandwidth (the memory layer's migration
  // copies through host mappings and has no modelled clock of its own).
  Status replace_experts(rt::Runtime& runtime, std::span<const ic::ExpertMap> maps,
                         ExpertMoveStats* stats = nullptr);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace moe::models
