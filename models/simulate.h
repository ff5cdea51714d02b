// Timing-mode simulation of one model step at full size over the runtime.
//
// simulate() opens a Runtime in timing mode on the supernode, and runs one decode step (or
// one prefill of a batch of prompts) of the model through the real control path with no
// payload: kernels with the costs of models/cost/ launched on runtime streams (one per NPU
// die), tokens moved by the interconnect's fused MoE dispatch and combine in timing mode
// (MoeBuffer, ExpertMap), routing drawn from a seeded uniform distribution. Every figure
// it returns is on the modelled clock except wall_ms.
//
// Placement: attention is data-parallel (by default; see "Attention split" below): each NPU
// owns batch_per_npu sequences, split over its dies (each die holds a copy of the attention
// weights). Experts: the `npus` NPUs form npus / ep expert-parallel groups of `ep` NPUs; in
// each group every NPU holds
// ceil(num_experts / ep) routed experts (when ep does not divide the experts evenly, or
// exceeds them, the slots left over hold redundant replicas, EPLB-style), and a copy of the
// shared experts, applied to its own tokens. An NPU splits each of its FFNs over its dies by
// the intermediate dimension (each die reads half of every weight; the two partial outputs
// are summed by one vector add). Group 0 is simulated: the other groups run the same shapes
// on disjoint NPUs and links (the fabric's L2 is not oversubscribed), so they take the
// same modelled time up to their own routing draw.
//
// Attention split (attention_split = 2: tensor parallelism of attention inside one NPU): each
// die holds and reads half of every attention block's weights and runs half of the heads for
// ALL of the NPU's sequences, instead of a whole copy run on half of the sequences. For MLA
// the per-head weights (q_b, the absorbed kv_b parts, o_proj) are split by heads and the
// shared down-projections q_a / kv_a by output columns; the dies then exchange their latent
// halves (a sync of the two dies; the small on-chip transfer is not charged, as for the FFN
// partial sums), each normalises the full latent rows, runs its heads over the full latent
// KV cache of every sequence (each die keeps its own copy of the latent cache: the KV line
// of the HBM budget doubles), and die 0 sums the two partial o_proj outputs with one vector
// add before each die adds the residual for its share of the tokens. GQA models split their
// q heads and ceil(kv_heads / 2) KV heads the same way (no latent, so no exchange beyond the
// sum). At small batches a die's attention is bound by its weight read, so halving the
// weights per die roughly halves the attention time; at large batches both dies read the
// same whole KV cache, so the split reads more cache bytes than the data-parallel layout.
// The router, FFNs, embedding and LM head keep splitting tokens over the dies.
//
// Microbatches and overlap: the step's tokens are cut into units (decode: `microbatches`
// units of the batch; prefill: chunks of prefill_chunk_tokens tokens per NPU for the MoE
// part, after attention over the whole prompts) processed `microbatches` at a time, each in
// flight unit with its own MoeBuffer. The compute engines (streams) and the fabric
// (transport endpoints) keep separate modelled clocks, so while unit A's dispatch or
// combine occupies the fabric the die runs unit B's attention or experts: work is launched
// in the order a two-batch overlap schedule issues it (attention A, dispatch A, attention
// B, dispatch B, experts A, combine A, experts B, combine B, then A's residual and next
// layer); each consumer waits (Stream::wait_until) for the modelled time its input arrived.
// What two units cost: every kernel of a layer is launched once per unit, and a kernel
// streams its weights from HBM each time it runs (a layer's weights are far larger than any
// on-chip cache), so a decode step with two microbatches reads each die's attention, expert
// and router weights twice and launches twice the kernels; FLOPs, activations and the KV
// cache are the same. hbm_bytes_per_die and kernels_per_die in the result show it. Decode on
// cm384 is weight-bound at the batches a 15 ms-class TPOT allows, so two microbatches are
// slower there (README: the figures); prefill chunks are units anyway, so two in flight cost
// nothing extra and hide communication.
//
// Layers: dense layers and the step's ends are simulated in full. MoE layers all have the
// same shapes, but each draws its own routing; by default `moe_layers` = 2 of them are
// simulated in sequence and the rest are scaled: the step gains, per remaining layer, the
// mean modelled time of the simulated MoE layers after the first (steady state: the first
// also fills the pipeline); the parts, the mean of all simulated ones (each layer's FFN
// residual, launched at the next layer's start, counted with its layer). This is an estimate
// of the expectation over routing draws, exact when every layer draws the same routing.
// moe_layers = 0 simulates every layer (the tests check the two agree closely; DeepSeek-V3
// decode b24 on cm384: 30.455 ms all 58, 30.475 ms with 2). The wall time is mostly the
// simulated fabric operations of each dispatch and combine (O(ep x destinations) per layer),
// so it grows with the simulated layers and with ep.
//
// MTP (decode only): with mtp = 1 every step verifies 2 tokens per sequence (a draft from
// the previous step), runs the MTP module (one more MoE layer, its projection and a second
// LM head) and yields 1 + mtp_accept tokens per sequence on average: TPOT = step / (1 + P).
//
// Thread-safety: simulate() runs on the calling thread; it sets the options
// IC_SIGNAL_TABLE_WORDS and MEM_SYMMETRIC_HEAP_BYTES (process-wide) when the dispatch
// buffers need more than they give, and restores them before returning: do not run two
// simulations at once.
#pragma once

#include <cstdint>
#include <string>

#include "interconnect/moe_buffer.h"
#include "models/model_config.h"
#include "runtime/base/status.h"
#include "runtime/device/work.h"

namespace moe::models {

enum class Phase : uint8_t { kDecode = 0, kPrefill = 1 };

struct SimulateOptions {
  std::string supernode = "cm384";
  Phase phase = Phase::kDecode;
  uint32_t npus = 0;             // attention data-parallel NPUs; 0: every NPU
  uint32_t ep = 0;               // NPUs of one expert-parallel group (divides npus); 0: npus
  uint32_t batch_per_npu = 24;   // sequences per NPU
  uint32_t kv_len = 4096;        // decode: cached positions per sequence
  uint32_t prefill_len = 4096;   // prefill: prompt tokens per sequence
  uint32_t prefill_chunk_tokens = 512;  // prefill: tokens per NPU in one dispatch
  dev::Precision precision = dev::Precision::kInt8;  // linear layers: kBf16 or kInt8 (W8A8)
  uint32_t mtp = 0;              // 0 or 1 (decode)
  double mtp_accept = 0.7;       // acceptance of the draft token, in [0, 1]
  uint32_t microbatches = 1;     // 1 or 2 units in flight
  // Attention inside one NPU: 1: data-parallel over its dies (each die runs whole blocks for
  // its share of the sequences and holds a copy of the attention weights); 2: tensor-parallel,
  // heads split over the dies (each die holds half of the weights and runs half of the heads
  // for all of the NPU's sequences). 2 requires 2 dies per NPU and an even head count.
  uint32_t attention_split = 1;
  uint32_t moe_layers = 0xffffffffu;  // MoE layers simulated; 0: all; default (~0u): 2
  uint64_t seed = 1;             // routing draws
  // How a dispatch's destinations learn it is complete (interconnect/moe_buffer.h): kAuto
  // lets the buffer choose from its static config (kBarrier when a source reaches fewer
  // (token, rank) pairs than there are ranks, as in small-batch decode).
  ic::DispatchCompletion completion = ic::DispatchCompletion::kAuto;
};

// Modelled ns per step, scaled to every layer. Compute parts: the mean over the group's dies
// of the time each die spent on that part; communication: dispatch / combine latency
// (slowest rank's end minus the common start), summed over layers and units.
struct PartTimes {
  double attention_ns = 0;  // norms, projections, rotary, attention core, residual
  double dispatch_ns = 0;
  double experts_ns = 0;    // routed, shared and dense FFNs (partial-sum add included)
  double combine_ns = 0;
  double other_ns = 0;      // embedding, router, FFN residual, final norm, LM head, sampling, MTP projection
  double total() const { return attention_ns + dispatch_ns + experts_ns + combine_ns + other_ns; }
};

struct HbmBudget {  // bytes per NPU
  double routed_expert_weights = 0;
  double shared_and_dense_weights = 0;
  double attention_side_weights = 0;  // attention blocks, router, embedding, LM head: per die
                                      // x dies (attention_split 2: half a block per die)
  double kv_cache = 0;
  double dispatch_buffers = 0;
  double total = 0;
  double capacity = 0;
  bool fits = false;
};

struct SimulateResult {
  ModelConfig config;
  SimulateOptions options;        // as resolved (npus, ep, moe_layers filled in)
  uint32_t groups = 0;            // expert-parallel groups (npus / ep)
  uint32_t experts_per_npu = 0;   // routed expert slots per NPU (replicas included)
  uint32_t tokens_per_seq = 0;    // new tokens per sequence in the step (decode 1 or 2)
  uint32_t units = 0;             // microbatches / chunks per layer
  uint32_t moe_layers_total = 0;  // MoE layers of the step (MTP module included)
  uint32_t moe_layers_simulated = 0;
  double step_ns = 0;             // modelled: one decode step / one prefill of the batch
  double tpot_ns = 0;             // decode: step / (1 + P with MTP); prefill: 0
  double tokens_per_s_per_npu = 0;
  PartTimes parts;
  double comm_ns = 0;             // dispatch + combine
  double compute_busy_ns = 0;     // the busiest die's busy time
  // The busiest die's attention time (parts.attention_ns is the mean over dies: with split 1
  // and fewer sequences than dies, one die runs every block and the other idles).
  double attention_busiest_die_ns = 0;
  double hbm_bytes_per_die = 0;   // HBM bytes the step's kernels read and write, mean per die
  double kernels_per_die = 0;     // kernel launches in the step, mean per die
  double exposed_comm_ns = 0;     // step - compute_busy, clamped to [0, comm]
  double unoverlapped_comm_share = 0;  // exposed / comm, in [0, 1]
  HbmBudget hbm;
  ic::DispatchCompletion completion = ic::DispatchCompletion::kPerSourceFlags;  // resolved
  double wall_ms = 0;             // wall clock of the simulation
  double wall_setup_ms = 0;       // of which opening the runtime, streams and buffers
};

// Checks the options against the model and the supernode's NPU count: kInvalidArgument
// naming the field (npus over the supernode's, ep not dividing npus, batch 0, ...).
Status validate_simulate_options(const ModelConfig& config, const SimulateOptions& options,
                                 uint32_t supernode_npus);

StatusOr<SimulateResult> simulate(const ModelConfig& config, const SimulateOptions& options);

std::string simulate_result_to_json(const SimulateResult& result);
std::string simulate_result_to_text(const SimulateResult& result);

}  // namespace moe::models
