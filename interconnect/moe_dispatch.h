// Fused MoE dispatch and combine over the memory-semantic transport (DeepEP-style).
//
// dispatch: every source rank sends each of its tokens, once per destination rank, straight
// into that rank's receive slots, then signals:
//   1. routing: each top-k expert of a token picks one replica (ExpertMap::routed_rank);
//      shared experts add their nearest replica. The token's hits are grouped by
//      destination rank: one slot per (token, destination) carries the token once with
//      every hit it has there (local expert, top-k position, weight);
//   2. packing: the source writes its slots into its send staging, one contiguous run per
//      destination, in token order (INT8: quantised here with a per-token scale);
//   3. per destination it has tokens for: ONE fetch_add on the destination's slot counter
//      reserves a run of n slots and ONE put writes the whole run there. A source's
//      destinations are spread over its issue contexts (MoeBufferConfig), so the round trips
//      of the reservations overlap. How the destinations learn that everything has landed
//      is the completion mode (below);
//   4. each destination reads the slot headers of its runs, checks them (epoch, one
//      contiguous run per source, hits in range) and builds the receive layout: per local
//      expert the list of its rows (slot, weight), the dynamic shape an expert kernel runs
//      on; then it resets its slot counter.
// The result is a DispatchHandle.
//
// ---- Completion (MoeBufferConfig::completion; the same for every rank, from static config) ----
//  - kPerSourceFlags: after its puts, a source sets the (destination, source) dispatch flag
//    of EVERY destination to (epoch << 32 | n), n = 0 included, each signal after its run's
//    data (issued after all of the rank's puts, earliest landing first, so that no signal
//    holds the NPU's in-order fabric engine while later runs wait: see issue_signals in
//    moe_dispatch_internal.h); a destination waits for all R flags and checks each run
//    against its announced length. R^2 signals per dispatch, all in parallel: a destination
//    can start as soon as its own R flags are in, with no global synchronisation, which
//    overlaps best when every source has runs for most destinations (training, prefill,
//    large decode batches), where the flags are a small fraction of the traffic.
//  - kBarrier: sources signal nothing. Each source quiets its contexts (its puts are
//    visible), every NPU enters one barrier over the group's NPUs (the transport's group
//    barrier: an arrival per NPU at the root and a release back, 2 signals per NPU, one
//    round trip plus the root's serialisation of the arrivals), and then each destination
//    reads its slot counter, which holds every reservation made on it: that is its slot
//    count; the runs are read from the slot headers. O(R) signals and O(R) host work for
//    the synchronisation, whatever the traffic, but every rank waits for the slowest
//    source (one barrier's latency at least, and no overlap of early destinations with
//    late sources). Right when most (source, destination) pairs carry nothing: a decode
//    step of a few tokens over hundreds of ranks, where kPerSourceFlags spends R^2 flags
//    (147k at R = 384) to announce nothing.
//  - kAuto picks kBarrier when one source can reach fewer (token, rank) pairs than there
//    are ranks (max_tokens_per_rank * D < R, see moe_buffer.h), else kPerSourceFlags.
//  Measured (moe-bench ic_dispatch_decode_384: cm384, R = 384, 1 token in the step, hidden
//  256, top-8 + 1 shared): kPerSourceFlags 6.0 us modelled, about 1 s of host time (the
//  147k flags each cost a simulated fabric operation); kBarrier 7.4 us modelled (the root
//  takes 384 arrivals in turn), a few ms of host time, about 2R transport operations of
//  synchronisation. Every rank must hear something to learn it got nothing, so R messages
//  is the floor of any termination scheme; the barrier's 2R is within a factor 2 of it.
// Combine needs neither: each home knows from its handle which ranks hold its tokens and
// waits only for their flags.
//
// combine(handle, expert outputs): the reverse path.
//   1. each expert rank reduces, per received slot, its rows' outputs weighted by their
//      routing weights (FP32), converts the partial to the combine format and writes it into
//      its combine-send rows (row i for slot i);
//   2. per source rank it received from: ONE put of the run of partials (contiguous: the
//      source's slots were contiguous) into the source's combine-receive rows at the place
//      the source chose at dispatch (its runs' order), then the (source, expert rank)
//      combine flag, signalled after the data as in dispatch;
//   3. each home rank waits for the flags of the ranks it sent to, and sums, per token in
//      FP32, its partials (in the order of the token's destinations); the result is rounded
//      to the combine format.
// So out[t] = sum over the token's top-k hits of weight_k * expert_k(x_t), plus each shared
// expert's weight times its output.
//
// ---- Execution and modelled time ----
// The simulation is one process: each call drives every rank's endpoints from the calling
// thread, in phases (all sources issue, in modelled-time order across every issuing context
// of every rank; then every destination waits for its flags, or every NPU enters and
// leaves the barrier). Host (wall) work follows the traffic: ranks without tokens are not
// routed or packed, send and receive tables list only the pairs that carry tokens, and only
// ranks with slots or tokens take part in combine. The transport's signal
// records make each wait advance the waiter's clock to the modelled moment the flag became
// visible, so each rank ends at its true modelled time. Every call starts all ranks at the
// group's latest clock (as after a barrier) and reports latency = latest rank end - start.
// Local passes over HBM (packing, the combine reductions) cost their bytes over the NPU's
// HBM bandwidth (shared by its die ranks).
// Timing mode (MoeBufferConfig::mode): the same path, no payload: routing, counts,
// reservations, flags and waits all run, token data is neither read nor written, and slot
// headers travel on the host side (the fabric carries no bytes there).
//
// ---- Errors ----
// Bad input is refused before anything is sent, with kInvalidArgument naming the rank,
// token and field: a token count over max_tokens_per_rank, an expert id out of range, an
// expert twice in one token's top-k, a non-finite weight, top-k over max_topk, span sizes
// that do not match, a shared expert count over max_shared_experts, a map for another
// number of ranks. A handle from another buffer, or older than the buffer's latest dispatch,
// is refused by combine (kFailedPrecondition). A delivery failure (kNpuLost, retries
// exhausted) or an inconsistent receive buffer (kInternal) fails the call and leaves the
// buffer unusable (MoeBuffer::failure()).
//
// Thread-safety: one call at a time per buffer (see MoeBuffer).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "interconnect/moe_buffer.h"
#include "interconnect/moe_dispatch_map.h"

namespace moe::ic {

// One source rank's tokens.
struct DispatchInput {
  uint32_t num_tokens = 0;
  std::span<const uint16_t> tokens_bf16;  // num_tokens x hidden, row-major; ignored (may be
                                          // empty) in timing mode
  std::span<const int32_t> topk_ids;      // num_tokens x topk; -1: no expert at that position
  std::span<const float> topk_weights;    // num_tokens x topk
};

// What a received slot holds, from its header.
struct SlotInfo {
  uint32_t src_rank = 0;
  uint32_t src_token = 0;
  float scale = 1.0f;  // INT8 dequantisation scale (1 for BF16)
};

// One (token, expert) pair an expert on this rank must process.
struct ExpertRow {
  uint32_t slot = 0;       // the received slot holding the token
  uint32_t topk_slot = 0;  // k for a routed expert; topk + shared index for a shared one
  float weight = 0;
};

// The contiguous run of slots one source reserved on a destination.
struct SourceRun {
  uint32_t src_rank = 0;
  uint32_t first_slot = 0;  // on the destination
  uint32_t num_slots = 0;   // >= 1
  uint32_t home_row = 0;    // the source's combine-receive row of the run's first token
};

// What one rank received: the receive layout. Sizes follow the traffic, not the group:
// a rank that received nothing has no slots, no runs and no rows.
struct RankReceive {
  uint32_t num_slots = 0;                // tokens received (slots 0..num_slots-1 in use)
  std::vector<SlotInfo> slots;           // per slot
  std::vector<SourceRun> runs;           // per source that sent here, in slot order
  std::vector<LocalExpert> experts;      // this rank's local experts (ExpertMap order)
  std::vector<uint32_t> expert_offsets;  // rows of local expert j: rows[offsets[j]..[j+1])
  std::vector<ExpertRow> rows;           // expert-major, slot order inside an expert
  uint32_t num_rows() const { return static_cast<uint32_t>(rows.size()); }
  // The run of source `src`, or null when it sent nothing here (linear in runs).
  const SourceRun* run_from(uint32_t src) const;
};

// The run one source reserved on one destination, seen from the source.
struct DestRun {
  uint32_t dst_rank = 0;
  uint32_t num_slots = 0;  // >= 1
  uint32_t row_base = 0;   // its first combine-receive row (and send-staging slot) here
};

// What one rank sent (as the tokens' home), for combine.
struct RankSend {
  uint32_t num_tokens = 0;
  std::vector<DestRun> dests;           // destinations it sent to, ascending rank (= row order)
  std::vector<uint32_t> token_offsets;  // token t's combine rows: token_rows[off[t]..[t+1])
  std::vector<uint32_t> token_rows;     // in the order of the token's destinations
  uint32_t num_rows = 0;                // combine-receive rows in use
  // The run sent to `dst`, or null (binary search).
  const DestRun* run_to(uint32_t dst) const;
};

// Figures of one dispatch or combine. Modelled times in ns; wall in ns.
struct PhaseStats {
  double start_ns = 0;                          // the common start (the group's latest clock)
  std::vector<double> rank_end_ns;              // per rank: when it finished
  double latency_ns = 0;                        // max(rank_end_ns) - start_ns
  std::vector<uint64_t> bytes_sent;             // per rank: payload bytes put, to itself included
  std::vector<uint64_t> bytes_received;         // per rank
  std::vector<uint64_t> fabric_bytes_sent;      // per rank: to other NPUs only
  std::vector<uint64_t> fabric_bytes_received;  // per rank: from other NPUs only
  int64_t wall_ns = 0;
};

struct DispatchHandle {
  uint64_t buffer_id = 0;
  uint32_t epoch = 0;
  uint32_t topk = 0;
  uint32_t num_shared = 0;
  std::vector<float> shared_weights;
  std::vector<RankReceive> recv;  // per rank, as a destination
  std::vector<RankSend> send;     // per rank, as a source
  PhaseStats stats;
};

// Dispatches `inputs` (one per rank, inputs.size() == buffer.num_ranks()) with `topk`
// experts per token (<= max_topk) by `map` (its num_ranks must be the buffer's).
StatusOr<DispatchHandle> moe_dispatch(MoeBuffer& buffer, const ExpertMap& map,
                                      std::span<const DispatchInput> inputs, uint32_t topk);

// The received token in `slot` of `rank`, dequantised to floats (out.size() == hidden).
// Functional mode only; the handle must be the buffer's latest.
Status read_received_token(const MoeBuffer& buffer, const DispatchHandle& handle, uint32_t rank,
                           uint32_t slot, std::span<float> out);
// Every row of local expert `expert` on `rank`, dequantised: rows x hidden floats in row order.
Status read_expert_rows(const MoeBuffer& buffer, const DispatchHandle& handle, uint32_t rank,
                        uint32_t expert, std::vector<float>* out);

// Combines: expert_out[r] holds handle.recv[r].num_rows() x hidden floats, the output of
// each row in handle row order; out[r] receives handle.send[r].num_tokens x hidden floats
// (BF16 values when the combine format is BF16). In timing mode both may be empty (no
// payload). *stats (optional) gets the figures.
Status moe_combine(MoeBuffer& buffer, const DispatchHandle& handle,
                   std::span<const std::span<const float>> expert_out,
                   std::span<const std::span<float>> out, PhaseStats* stats = nullptr);

}  // namespace moe::ic
