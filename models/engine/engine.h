// The MoE engine: a model's forward pass over the Runtime, experts spread over the supernode.
//
// Deployment (DeepSeek-V3's, at any scale from 1 NPU to 384):
//  - Expert parallelism: every NPU (or every die: ranks_per_npu) of the engine is one EP
//    rank; the routed experts of each MoE layer are placed over the ranks by an ExpertMap
//    (default: contiguous blocks, DeepEP's layout; redundant replicas of hot experts allowed;
//    apply_expert_maps() gives each MoE layer a map of its own between steps: models/eplb/).
//    Tokens travel to their experts and
//    back by the interconnect's fused dispatch and combine (interconnect/moe_dispatch.h) over
//    one MoeBuffer.
//  - Attention data parallelism: `attention_dp` of the EP ranks (spread evenly over the list)
//    hold a replica of everything else (device_weights.h) and host sequences. A sequence lives
//    on one DP rank (its home) for its whole life: its KV cache is in that rank's HBM (a paged
//    pool, kv_pool.h), and its tokens' attention, dense FFNs, router, shared experts, final
//    norm and LM head run there.
//
// One step (forward()): a batch of (sequence, new tokens) entries: prefill chunks and decode
// tokens mix freely. Per layer: at each home, one "attention" kernel (input norm, q/k/v,
// qk-norm, rotary, causal attention over the paged cache, o projection, residual, post norm)
// then either a dense-FFN kernel, or a router kernel, dispatch, one grouped expert kernel on
// every EP rank that received rows, combine, and a kernel adding the shared experts and the
// residual. Last, the final norm and LM head for the last token of each entry.
// Every kernel is launched on its NPU's compute stream with a cost (models/cost/) and a body,
// so the modelled clock advances in functional mode too; dispatch and combine start when the
// compute they consume ends on the modelled clock, and consumers wait for their arrival.
//
// Numerics (the contract the tests check against a double-precision reference): FP32
// activations and accumulation, BF16 weights; routed experts see their input rounded to the
// dispatch format (BF16, or INT8 per token); shared experts see the FP32 input at home; the
// combine format is FP32 by default (sums differ only in order). The same tokens on 1, 8 or
// 384 NPUs: routing is computed in a fixed order independent of the batch, every token is
// processed by the same expert code whatever rank holds it, and sampling is seeded by
// (request seed, position) (models/kernels/sampling.h).
//
// Errors: bad input (unknown or repeated sequence, empty entry, token id >= vocab, a home
// over max_tokens_per_rank, a sequence past max_seq_len, a full KV cache) is refused before
// anything runs, naming the entry. A failure inside a step (an NPU lost during dispatch)
// rolls every sequence of the step back to its length before the step and returns the error.
//
// Thread-safety: one thread drives an engine (its streams and buffer are single-producer).
// Ownership: the Runtime outlives the engine.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "interconnect/moe_buffer.h"
#include "interconnect/moe_dispatch_map.h"
#include "models/engine/device_weights.h"
#include "models/kernels/kv_cache.h"
#include "models/weights/weight_store.h"
#include "runtime/runtime.h"

namespace moe::models {

struct EngineState;  // engine_state.h

struct EngineOptions {
  std::vector<dev::NpuId> npus;       // the NPUs; empty: every NPU of the runtime
  uint32_t ranks_per_npu = 1;         // EP ranks per NPU: 1 (NPU-level) or up to its dies
                                      // (rank r is die r % n of npus[r / n])
  uint32_t attention_dp = 0;          // DP ranks among them; 0: all of them
  std::optional<ic::ExpertMap> expert_map;  // default: ExpertMap::uniform(experts, ranks)
  ExpertPrecision precision = ExpertPrecision::kBf16;  // routed and shared experts
  ic::TokenFormat dispatch_format = ic::TokenFormat::kBf16;    // kBf16 or kInt8
  ic::TokenFormat combine_format = ic::TokenFormat::kFloat32;  // kFloat32 or kBf16
  // Barrier completion: a step's few tokens reach few of the R ranks, so per-source flags
  // (R^2 signals) would cost far more host time (interconnect/moe_dispatch.h, Completion).
  ic::DispatchCompletion completion = ic::DispatchCompletion::kBarrier;
  uint32_t max_tokens_per_rank = 64;  // tokens one home puts through one step
  uint32_t kv_block_positions = 16;
  uint32_t kv_blocks_per_rank = 1024;
  kernels::KvDtype kv_dtype = kernels::KvDtype::kFloat32;
  uint64_t max_weight_bytes = uint64_t{8} << 30;  // refuse to place more (a full-size model
                                                  // belongs in timing mode: moe simulate)
  LoadProgress progress;              // weight loading progress (optional)
  // Each routed-expert replica on its own HBM page: re-placement then migrates pages
  // (DevicePlacement::expert_own_pages). A page per replica; for models whose experts
  // fill pages anyway, or to move experts without copies.
  bool expert_own_pages = false;
};

// A sequence: an index into the engine's table and a generation (stale ids are refused).
struct SeqId {
  uint32_t index = UINT32_MAX;
  uint32_t generation = 0;
  bool operator==(const SeqId&) const = default;
};

struct StepInput {
  SeqId seq;
  std::span<const uint32_t> tokens;  // appended at the sequence's positions length, length+1...
};

// Wall figures of one step (ns), and its modelled duration.
struct StepStats {
  int64_t wall_ns = 0;
  int64_t math_wall_ns = 0;      // inside kernel bodies (the math a device would do)
  int64_t comm_wall_ns = 0;      // inside dispatch and combine (the device's communication,
                                 // emulated host-side: the NPUs run it on a real supernode)
  int64_t host_wall_ns() const { return wall_ns - math_wall_ns - comm_wall_ns; }
  double modelled_ns = 0;        // from the step's start to the last kernel's end
  uint32_t tokens = 0;
  uint32_t kernels = 0;          // kernels launched
};

// A sequence's paged KV cache as global addresses: what a KV transfer between two engines
// (prefill on some NPUs, decode on others: models/serving/kv_transfer.h) copies over the
// fabric. k[layer * num_blocks + i] is the sequence's i-th block of layer `layer` (K), v
// likewise; each block holds block_positions positions in block_bytes bytes (kv_pool.h's
// layout). The addresses stay valid until the sequence is closed, truncated or grown.
struct SequenceKvBlocks {
  dev::NpuId npu = dev::kInvalidId;  // the home's NPU (where the blocks are)
  uint32_t length = 0;               // positions in the cache
  uint32_t num_layers = 0;
  uint32_t num_blocks = 0;
  uint32_t block_positions = 0;
  kernels::KvDtype dtype = kernels::KvDtype::kFloat32;
  uint64_t block_bytes = 0;
  std::vector<mem::GlobalAddr> k, v;
};

// What one re-placement of routed experts did and cost (Engine::apply_expert_maps).
struct PlacementChangeStats {
  ExpertMoveStats moves;        // replicas copied, migrated, freed; fabric bytes; modelled ns
  int64_t wall_ns = 0;          // the call's wall time: how long serving paused
  uint32_t layers_changed = 0;  // MoE layers whose map differs from the one in use
};

class Engine {
 public:
  // Loads `weights` onto the supernode. kFailedPrecondition for a timing-mode runtime or one
  // without transport; kUnsupported for MLA models (the engine runs GQA; MLA kernels are in
  // models/kernels/mla.h, timing in moe simulate); kInvalidArgument for bad options (naming
  // them); kResourceExhausted when the weights exceed max_weight_bytes.
  static StatusOr<std::unique_ptr<Engine>> create(rt::Runtime& runtime, const ModelWeights& weights,
                                                  EngineOptions options = {});
  ~Engine();

  // A new, empty sequence on DP rank index `dp` (default: the one with the fewest sequences).
  StatusOr<SeqId> open_sequence(std::optional<uint32_t> dp = std::nullopt);
  // Frees its KV cache. kNotFound for an unknown or closed id.
  Status close_sequence(SeqId seq);
  // Drops positions >= length (rejected speculative tokens, a cancelled suffix).
  Status truncate_sequence(SeqId seq, uint32_t length);
  StatusOr<uint32_t> sequence_length(SeqId seq) const;
  // Reserves KV blocks for `positions` positions in total now (admission control: a request
  // that reserved its prompt + max_new_tokens never fails a step for want of blocks).
  // kResourceExhausted (nothing reserved) when the home's pool lacks them.
  Status reserve_sequence(SeqId seq, uint32_t positions);
  // Positions the sequence can hold without taking more blocks.
  StatusOr<uint32_t> sequence_capacity(SeqId seq) const;
  StatusOr<uint32_t> sequence_home(SeqId seq) const;  // its DP rank index
  // The sequence's KV blocks (every block it holds, reserved ones included). kNotFound.
  StatusOr<SequenceKvBlocks> sequence_kv_blocks(SeqId seq) const;
  // Sets the length of a sequence whose blocks the caller filled from outside the engine
  // (an imported KV cache): positions [0, length) must hold valid K and V rows, written at
  // the addresses of sequence_kv_blocks(). kOutOfRange when length exceeds its capacity.
  Status commit_imported_kv(SeqId seq, uint32_t length);
  // The latest modelled time of the engine's compute streams: when everything launched so
  // far ends (a transfer reading its KV cache starts no earlier).
  ModelTime modelled_now() const;

  // One forward step. logits: inputs.size() x vocab, row i the logits after entry i's last
  // token. See the header note for errors and rollback.
  Status forward(std::span<const StepInput> inputs, std::span<float> logits,
                 StepStats* stats = nullptr);

  const ModelConfig& config() const;
  rt::Runtime& runtime() const;
  uint32_t num_ranks() const;  // EP ranks (NPUs x ranks_per_npu)
  uint32_t num_dp_ranks() const;
  uint32_t max_tokens_per_rank() const;
  dev::NpuId dp_npu(uint32_t dp) const;
  uint32_t open_sequences() const;
  // The paged KV cache of DP rank `dp`: positions per block, blocks free and in all.
  uint32_t kv_block_positions() const;
  uint32_t kv_free_blocks(uint32_t dp) const;
  uint32_t kv_total_blocks(uint32_t dp) const;
  uint32_t sequences_on(uint32_t dp) const;
  const DeviceWeights& weights() const;
  // The map MoE layer `moe_layer` (< config().num_moe_layers()) routes by now (every layer:
  // the one given at create, until apply_expert_maps changes them).
  const ic::ExpertMap& expert_map(uint32_t moe_layer = 0) const;

  // Expert re-placement (EPLB; engine_placement.cpp): per_moe_layer[m] becomes MoE layer m's
  // map, one per MoE layer, same experts and ranks as the engine's. Run between two steps:
  // serving pauses for this call only (its wall time is in stats). Weights move as
  // DeviceWeights::replace_experts says; tokens computed afterwards are the same as without
  // the change (every replica holds the same bytes and the expert code does not depend on
  // where it runs). kInvalidArgument naming the layer for a map of the wrong shape; HBM and
  // copy errors: nothing changed. Load statistics (expert_load()) are kept.
  Status apply_expert_maps(std::span<const ic::ExpertMap> per_moe_layer,
                           PlacementChangeStats* stats = nullptr);
  // Tokens each routed expert received since the engine opened (logical ids; the load
  // statistics an expert balancer reads), per MoE layer.
  const std::vector<std::vector<uint64_t>>& expert_load() const;

 private:
  explicit Engine(std::unique_ptr<EngineState> state);
  std::unique_ptr<EngineState> s_;
};

}  // namespace moe::models
