// The symmetric buffers of fused MoE dispatch and combine, and the formula that sizes them.
//
// One MoeBuffer serves one expert-parallel (EP) group: num_ranks ranks, each an NPU or a die
// of one (ranks_per_npu). It owns (DeepEP's Buffer is the model):
//  - one kSymmetric allocation over the group's NPUs: every rank has the same region at the
//    same offset of its NPU's symmetric window (a die rank at die * rank_bytes inside its
//    NPU's part), so any rank computes any other rank's addresses;
//  - `issue_contexts` transport endpoints per rank: parallel issuing contexts of the rank's
//    dispatch kernel (like DeepEP's warp groups, one per destination), each with its own
//    modelled clock, on the rank's NPU;
//  - the protocol state of moe_dispatch.h (epochs, signal values).
//
// ---- The region of one rank (offsets in bytes from the rank's base; MoeBufferLayout) ----
//   R = num_ranks, T = max_tokens_per_rank, H = hidden,
//   K = max_topk + max_shared_experts   (expert hits one token can have)
//   D = min(R, K)                       (distinct ranks one token can reach)
//   control      8 * (1 + 2R), rounded to 64: slot counter (word 0), then the dispatch flag
//                of each source rank, then the combine flag of each expert rank
//   header_bytes   = round16(24 + 8K)   a slot's metadata: epoch, source rank and token,
//                                       combine row, INT8 scale, hits (local expert, top-k
//                                       position, weight)
//   payload_bytes  = round16(H * bytes(dispatch_format))
//   slot_bytes     = header_bytes + payload_bytes
//   receive slots  R * T * slot_bytes   a token lands on a rank at most once (one slot per
//                                       (token, rank), carrying all its hits there), so R * T
//                                       slots hold any routing, however skewed: dispatch can
//                                       never overflow a rank, and needs no counts beforehand
//   send staging   T * D * slot_bytes   the source's packed runs, one per destination
//   combine send   R * T * row_bytes    row_bytes = round16(H * bytes(combine_format)):
//                                       one weighted partial per received slot
//   combine recv   T * D * row_bytes    the partials coming home, one per (token, rank)
//   rank_bytes     = the sum, each part aligned to 64
// Example: R = 256, T = 128, H = 7168, top-8, INT8 dispatch, BF16 combine: slot 7,264 B,
// about 1.02 GB per rank of global address space. Timing-mode buffers are never touched
// (only the control words), so they commit no host memory.
//
// Completion (MoeBufferConfig::completion, resolved into MoeBufferLayout::completion): with
// kBarrier, create() also makes a transport barrier group over the NPUs (2 fabric words each);
// the dispatch flags then go unused (the words stay in the layout, so both modes share it).
//
// Signal words: the transport remembers the modelled visibility time of 2R^2 + R words for
// one buffer (the flags and counters): IC_SIGNAL_TABLE_WORDS should exceed that (create()
// warns when it does not; waits on unrecorded words keep the waiter's clock, so modelled
// times would come out too early).
//
// Thread-safety: a MoeBuffer is driven by one thread at a time (its endpoints are
// single-threaded). Ownership: the transport and memory outlive the buffer.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "interconnect/quant_int8.h"
#include "interconnect/transport.h"
#include "memory/global_addr.h"
#include "runtime/base/status.h"

namespace moe::ic {

// How a dispatch's destinations learn that every run sent to them has landed (the trade-off
// is in moe_dispatch.h, "Completion").
enum class DispatchCompletion : uint8_t {
  kAuto = 0,            // chosen from the static config (see resolve_dispatch_completion)
  kPerSourceFlags = 1,  // every source signals every destination, n = 0 included (R^2 flags)
  kBarrier = 2,         // sources signal nothing; quiet, then one barrier over the group
};
const char* dispatch_completion_name(DispatchCompletion c);

struct MoeBufferConfig {
  std::vector<dev::NpuId> npus;  // the group's NPUs (distinct), rank order
  uint32_t ranks_per_npu = 1;    // 1: one rank per NPU; up to dies_per_npu: one per die
                                 // (rank r is die r % ranks_per_npu of npus[r / ranks_per_npu])
  uint32_t max_tokens_per_rank = 128;
  uint32_t hidden = 7168;  // elements per token
  uint32_t max_topk = 8;
  uint32_t max_shared_experts = 0;
  TokenFormat dispatch_format = TokenFormat::kBf16;  // kBf16 or kInt8
  TokenFormat combine_format = TokenFormat::kBf16;   // kBf16 or kFloat32
  Mode mode = Mode::kFunctional;  // kTiming: no payload moves (shapes and counts do)
  // Endpoints per rank issuing in parallel (clamped to num_ranks): a blocking fetch_add
  // costs a round trip, so one context reserving slots on R destinations would take R round
  // trips; W contexts take R / W. 32: about the vector cores of one die that a dispatch
  // kernel would occupy (a 910C die has 48); on cm384 EP 256 gains nothing beyond it.
  uint32_t issue_contexts = 32;
  int64_t wait_timeout_wall_ns = -1;  // wait_until limit; < 0: IC_WAIT_TIMEOUT_MS
  // kAuto resolves from static fields only, so every rank picks the same without talking.
  DispatchCompletion completion = DispatchCompletion::kAuto;
  // The ranks that may send (ascending; empty: every rank). With attention data parallelism
  // over fewer NPUs than the EP group only the DP ranks dispatch; in kBarrier mode only their
  // NPUs then meet in the barrier and one of them releases every rank (S arrivals + R release
  // signals instead of 2R; moe_dispatch.h, Completion). A rank outside the list with tokens is
  // refused by moe_dispatch.
  std::vector<uint32_t> source_ranks;
};

// The sizing formula's result (see the header note). Bytes.
struct MoeBufferLayout {
  uint32_t num_ranks = 0;
  uint32_t max_tokens_per_rank = 0;
  uint32_t hidden = 0;
  uint32_t max_hits_per_token = 0;   // K
  uint32_t max_dests_per_token = 0;  // D
  uint64_t header_bytes = 0;
  uint64_t payload_bytes = 0;
  uint64_t slot_bytes = 0;
  uint64_t combine_row_bytes = 0;
  uint64_t recv_slots = 0;  // R * T
  uint64_t send_slots = 0;  // T * D
  uint64_t control_offset = 0;
  uint64_t recv_offset = 0;
  uint64_t send_offset = 0;
  uint64_t combine_send_offset = 0;
  uint64_t combine_recv_offset = 0;
  uint64_t rank_bytes = 0;
  uint64_t signal_words = 0;  // 2R^2 + R over the group
  DispatchCompletion completion = DispatchCompletion::kPerSourceFlags;  // resolved, never kAuto
};

// kAuto's rule: kBarrier when one source can reach fewer (token, rank) pairs than there are
// ranks (max_tokens_per_rank * D < R: most of a source's flags would announce nothing, as in
// decode), else kPerSourceFlags. An explicit choice is returned unchanged.
DispatchCompletion resolve_dispatch_completion(DispatchCompletion asked, uint32_t num_ranks,
                                               uint32_t max_tokens_per_rank,
                                               uint32_t max_dests_per_token);

// The layout for a config (the formula), or kInvalidArgument naming a bad field. Does not
// look at the NPUs beyond their count.
StatusOr<MoeBufferLayout> compute_moe_buffer_layout(const MoeBufferConfig& config);

struct DispatchEngine;  // moe_dispatch.cpp

class MoeBuffer {
 public:
  // Validates the config (NPUs exist and are distinct, ranks_per_npu <= dies per NPU, the
  // formats, sizes), allocates the symmetric region (kOutOfMemory when a window is too
  // small, naming the bytes), zeroes the control words and opens the endpoints.
  static StatusOr<std::unique_ptr<MoeBuffer>> create(Transport& transport,
                                                     mem::GlobalMemory& memory,
                                                     const MoeBufferConfig& config);
  // Quiets the endpoints (errors are logged), closes them and frees the region.
  ~MoeBuffer();
  MoeBuffer(const MoeBuffer&) = delete;
  MoeBuffer& operator=(const MoeBuffer&) = delete;

  const MoeBufferConfig& config() const { return config_; }
  const MoeBufferLayout& layout() const { return layout_; }
  uint32_t num_ranks() const { return layout_.num_ranks; }
  uint32_t issue_contexts() const { return contexts_; }
  DispatchCompletion completion() const { return layout_.completion; }
  // kBarrier: the barrier group over the buffer's distinct NPUs (member i is npus[i]; with
  // source_ranks, over the source ranks' NPUs only); the endpoint that enters it for an NPU is
  // context 0 of the NPU's first rank. Null otherwise.
  Group* barrier_group() const { return group_.get(); }
  Mode mode() const { return config_.mode; }
  dev::NpuId npu_of(uint32_t rank) const { return config_.npus[rank / config_.ranks_per_npu]; }
  // Whether `rank` may send (every rank when source_ranks is empty).
  bool is_source_rank(uint32_t rank) const {
    return source_mask_.empty() || source_mask_[rank] != 0;
  }
  bool has_source_ranks() const { return !source_mask_.empty(); }
  uint32_t die_of(uint32_t rank) const { return rank % config_.ranks_per_npu; }
  // The node of the rank's NPU (from the topology).
  uint32_t node_of(uint32_t rank) const;
  // A number no other MoeBuffer of this process has (handles name their buffer by it).
  uint64_t id() const { return id_; }
  mem::GlobalMemory& memory() const { return memory_; }
  const dev::Topology& topology() const;

  // ---- addresses (preconditions: rank, src < num_ranks; indexes inside the layout) ----
  GlobalAddr rank_base(uint32_t rank) const { return rank_base_[rank]; }
  GlobalAddr slot_counter(uint32_t rank) const { return rank_base_[rank] + layout_.control_offset; }
  GlobalAddr dispatch_flag(uint32_t rank, uint32_t src) const {
    return slot_counter(rank) + 8 * (1 + uint64_t{src});
  }
  GlobalAddr combine_flag(uint32_t rank, uint32_t src) const {
    return slot_counter(rank) + 8 * (1 + uint64_t{layout_.num_ranks} + src);
  }
  GlobalAddr recv_slot(uint32_t rank, uint64_t slot) const {
    return rank_base_[rank] + layout_.recv_offset + slot * layout_.slot_bytes;
  }
  GlobalAddr send_slot(uint32_t rank, uint64_t slot) const {
    return rank_base_[rank] + layout_.send_offset + slot * layout_.slot_bytes;
  }
  GlobalAddr combine_send_row(uint32_t rank, uint64_t row) const {
    return rank_base_[rank] + layout_.combine_send_offset + row * layout_.combine_row_bytes;
  }
  GlobalAddr combine_recv_row(uint32_t rank, uint64_t row) const {
    return rank_base_[rank] + layout_.combine_recv_offset + row * layout_.combine_row_bytes;
  }

  // ---- issuing contexts and modelled time ----
  Endpoint& endpoint(uint32_t rank, uint32_t context) { return *endpoints_[rank][context]; }
  // The rank's modelled clock: the latest of its contexts'.
  ModelTime rank_now(uint32_t rank) const;
  // Moves every context of the rank to t if later.
  void advance_rank(uint32_t rank, ModelTime t);
  // The latest clock over every rank: the latest clock of every rank's context 0. Dispatch
  // and combine leave each rank's context 0 at or after its other contexts (so this is
  // every context's latest) while reading R words instead of R * issue_contexts scattered
  // ones; a caller that adds a dependency does it through advance_rank, advance_all or
  // context 0.
  ModelTime group_now() const;
  // Moves every context of every rank to t if later. A new buffer's contexts start at
  // modelled time 0: a caller on a machine that already ran advances them to its own clock
  // (dispatch starts every rank at the group's latest clock).
  void advance_all(ModelTime t);
  // Every endpoint's statistics, summed.
  EndpointStats transport_stats() const;

  // OK, or the error that made a dispatch or combine fail: the buffer is then unusable
  // (its receive buffers and counters are in an unknown state) and every later call returns
  // this error.
  const Status& failure() const { return failure_; }

 private:
  friend struct DispatchEngine;
  MoeBuffer(mem::GlobalMemory& memory, const MoeBufferConfig& config,
            const MoeBufferLayout& layout);

  mem::GlobalMemory& memory_;
  MoeBufferConfig config_;
  MoeBufferLayout layout_;
  uint64_t id_ = 0;
  uint32_t contexts_ = 1;
  mem::Allocation allocation_;
  std::vector<GlobalAddr> rank_base_;
  std::vector<std::vector<std::unique_ptr<Endpoint>>> endpoints_;  // [rank][context]
  std::unique_ptr<Group> group_;  // kBarrier completion only
  std::vector<uint8_t> source_mask_;  // per rank: may send (empty: all)
  Status failure_;
  // Protocol state (moe_dispatch.cpp).
  uint32_t epoch_ = 0;        // dispatches done; the current handle's epoch
  uint64_t combine_seq_ = 0;  // combines done (the combine flag value)
  // Timing mode: the slot headers, which the fabric does not carry there ([rank] bytes,
  // header_bytes per received slot).
  std::vector<std::vector<uint8_t>> shadow_headers_;
};

}  // namespace moe::ic
