// Collectives over any group of NPUs (or dies), built only on the transport's public API
// (transport.h): all-to-all and all-to-all-v, all-reduce, reduce-scatter, all-gather,
// broadcast, barrier, and a token all-to-all (the MoE dispatch pattern) with a hierarchical
// variant that sends a token across a node boundary once and fans it out inside the node.
//
// ---- The communicator ----
// A Communicator is a group of members in rank order: distinct (NPU, die) pairs, in any
// order. A member of die d of NPU p is driven by p's fabric engine (the simulator's engine is
// per NPU): its transfers are the NPU's transfers, and two dies of one NPU exchange data by
// an HBM-to-HBM copy inside the package. A group of NPUs is the usual case (die 0 each).
// The communicator owns, per member, endpoints on its NPU (a sender "tx"; a receiver "rx"
// that observes arrivals and re-sends received data; for the token all-to-all a "relay"
// that forwards and observes forwarded arrivals), a barrier group over the distinct NPUs,
// and symmetric scratch and flag memory allocated through mem::GlobalMemory
// (Policy::kSymmetric): per member kFlagBytes of signal words followed by two scratch
// halves of scratch_half_bytes() each (see CommConfig::scratch_bytes for the formula).
//
// ---- Execution model (single process) ----
// A call drives every member's endpoints from the calling thread, one phase at a time.
// In a phase, every member first puts its data (member s to (s + r) mod n for round
// r = 0..n-1, so each member receives one message per round), then, round by round, each
// sender signals the receiver's arrival counter (SignalOp::kAdd; the signal follows the
// data) and each receiver waits for that one increment. The receiver's wait_until thus
// advances its modelled clock to the moment each message became visible (transport.h,
// "Modelled time"), and its clock is the latest of its arrivals whatever order the
// simulator executed them in. Puts go before signals because the fabric engine issues an
// NPU's descriptors in order: a signal that must wait for its data would otherwise hold
// back the puts issued after it. Dependencies on received data (reducing, forwarding,
// re-sending) move the acting timeline with Endpoint::advance_to. A member's timelines are
// its endpoints' clocks and the clock of its vector cores (the host reductions, below);
// the member has finished when all have. At entry every timeline of a member starts at the
// latest of them (the member's previous collective is complete).
//
// ---- Algorithms (each chosen for a non-blocking switched fabric, the UB's shape) ----
//  - all-to-all(v): direct, n rounds (round 0 is the member's copy to itself).
//  - all-gather: direct (an all-to-all whose every chunk is the member's send buffer).
//  - reduce-scatter: direct: every member puts chunk d of its input into member d's scratch
//    (slot = source rank), then member d reduces the n inputs in rank order on its vector
//    cores into its output. Inputs larger than the scratch are done in slices that alternate
//    between the two scratch halves, so slice i + 1 travels while slice i is reduced.
//  - all-reduce: reduce-scatter of n balanced chunks into the output buffer, then an
//    all-gather of the reduced chunks inside the output buffer. In place (send == recv) is
//    allowed.
//  - broadcast: direct from the root up to CommConfig::broadcast_direct_max_bytes; above it
//    scatter (the root sends chunk i to member i) then all-gather, which costs about
//    2 x bytes / bandwidth instead of (n - 1) x bytes / bandwidth at the root.
//  - barrier: the transport's group barrier over the distinct NPUs; dies of one NPU meet on
//    the package.
//  - token all-to-all, flat: each source puts each token to each of its destinations.
//    Hierarchical: a token needed by several members of one remote node crosses the node
//    boundary once, to one of them (the relay: preferably the member on the source's rail,
//    the same index in node, else spread by token), which forwards it inside its node no
//    earlier than it observed its arrival. The receive layout is the same for both. On a
//    fabric without a cross-node penalty (the presets) the flat route is faster in modelled
//    time; the hierarchical one trades a second hop for fewer bytes on the node uplinks.
//
// ---- Modelled cost of the host reductions ----
// Functional reductions run on the host through the memory layer's host mappings
// (GlobalMemory::translate_host): they stand for the NPU's vector cores. Their modelled cost
// is the bytes the vector cores read and write over the HBM bandwidth of the topology
// ((inputs + 1) x chunk bytes / hbm.bandwidth_gbps); no kernel launch is charged (the
// reduction is part of one fused collective kernel). Timing mode charges the same cost and
// computes nothing.
//
// ---- Scratch reuse ----
// A member writes a peer's scratch half only after the peer has finished reading it: the
// communicator keeps, per member and half, the modelled time the half was drained and holds
// the writer back until then plus one signal latency between the two NPUs. That stands for
// the credit a real implementation returns (one flag per half); it binds only when a
// member runs a full half ahead of a peer.
//
// ---- Results and errors ----
// Every call returns the modelled time (latest member finish minus earliest member start,
// on the modelled clock), the wall time the host spent, and byte counts (payload between
// members, payload that crossed a node boundary). Bad input is refused before anything is
// issued with kInvalidArgument naming it (which buffer of which member, which size). A
// failure of the transport (kNpuLost, retries exhausted, a wait timeout) is returned with
// the collective and member in its message; the communicator is then broken and refuses
// further calls with kFailedPrecondition (recreate it): its counters no longer match.
// Faults the transport recovers from (lost or corrupted packets, a plane down) are
// invisible: the results are bit-identical and every byte arrives once.
//
// Buffers: one mem::GlobalAddr per member, in rank order (from a symmetric allocation:
// addresses_of(), or any per-member addresses). Each range must lie inside one live
// allocation (any NPU; usually the member's own) and be aligned to its element size.
// Ranges written by a collective must not overlap other ranges of the same call except
// where stated (in-place all-reduce).
//
// Thread-safety: a Communicator is used by one thread at a time (its endpoints are
// single-threaded). Several communicators may run concurrently on one transport.
// Blocking: every call returns when every member has finished (wait_until bounded by the
// wall-clock timeout of CommConfig::wait_timeout_wall_ns).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "interconnect/transport.h"
#include "memory/global_addr.h"
#include "runtime/base/clock.h"
#include "runtime/base/status.h"

namespace moe::mem {
class GlobalMemory;
}

namespace moe::ic {

enum class DataType : uint8_t {
  kFloat32 = 0,
  kBFloat16 = 1,  // stored as uint16 (the upper half of a float32); summed in float
  kInt32 = 2,     // sums wrap around (two's complement)
  kInt64 = 3,
};
uint32_t data_type_bytes(DataType type);
const char* data_type_name(DataType type);

enum class ReduceOp : uint8_t { kSum = 0, kMax = 1 };
const char* reduce_op_name(ReduceOp op);

// bfloat16 conversions: round to nearest even (NaN stays NaN).
uint16_t float_to_bf16(float value);
float bf16_to_float(uint16_t bits);

struct CommMember {
  dev::NpuId npu = dev::kInvalidId;
  uint32_t die = 0;  // < topology().dies_per_npu
  bool operator==(const CommMember&) const = default;
};

struct CommConfig {
  Mode mode = Mode::kFunctional;
  Issuer issuer = Issuer::kDevice;
  // Bytes of one scratch half per member (there are two). 0: the default,
  // max(kMinScratchHalfBytes, n x kScratchBytesPerPeer) for a group of n. At least
  // n x 8 bytes (one int64 element per source) is required.
  uint64_t scratch_bytes = 0;
  // wait_until's wall-clock limit; < 0: the transport's default (IC_WAIT_TIMEOUT_MS).
  int64_t wait_timeout_wall_ns = -1;
  // Broadcasts of at most this many bytes go directly from the root; larger ones scatter
  // then all-gather. 0: kDefaultBroadcastDirectMaxBytes.
  uint64_t broadcast_direct_max_bytes = 0;
};

inline constexpr uint64_t kFlagBytes = 64;  // signal words per member (8 words)
inline constexpr uint64_t kMinScratchHalfBytes = uint64_t{1} << 20;
inline constexpr uint64_t kScratchBytesPerPeer = uint64_t{4} << 10;
inline constexpr uint64_t kDefaultBroadcastDirectMaxBytes = uint64_t{64} << 10;

// What one collective call did. Times on the modelled clock unless named wall.
struct CollectiveResult {
  ModelTime start{};          // earliest member clock at entry
  ModelTime end{};            // latest member clock at exit
  double modelled_ns = 0;     // end - start
  int64_t wall_ns = 0;        // wall time of the call on the host
  uint64_t payload_bytes = 0;     // bytes put from one member to another (self copies excluded)
  uint64_t cross_node_bytes = 0;  // of those, bytes whose NPUs are in different nodes
  uint64_t forwarded_bytes = 0;   // token all-to-all: bytes relays forwarded inside a node
  uint64_t messages = 0;          // signalled messages (puts with their signal; empty ones too)
};

// Which route a token all-to-all takes.
enum class TokenAlgorithm : uint8_t {
  kFlat = 0,          // every (token, destination) pair is one transfer from the source
  kHierarchical = 1,  // one transfer per (token, remote node), fanned out inside the node
};

// The routing of a token all-to-all: for every source member, its tokens in order, each
// with the distinct member ranks that need it. Tokens arrive at member d ordered by
// (source rank, token index); recv_offset_tokens / recv_tokens give the layout.
class TokenRoutes {
 public:
  explicit TokenRoutes(uint32_t num_members);

  uint32_t num_members() const { return num_members_; }
  // Appends the next token of `source`. kInvalidArgument (and nothing added) for a source
  // or destination out of range or a destination named twice.
  Status add_token(uint32_t source, std::span<const uint32_t> destinations);

  uint32_t num_tokens(uint32_t source) const;
  std::span<const uint32_t> destinations(uint32_t source, uint32_t token) const;
  // Tokens member d receives in all, and from `source` (and where those start in d's
  // receive buffer, in tokens).
  uint64_t recv_tokens(uint32_t member) const;
  uint64_t recv_tokens_from(uint32_t source, uint32_t member) const;
  uint64_t recv_offset_tokens(uint32_t source, uint32_t member) const;
  // The slot (in tokens) of token `token` of `source` in member d's receive buffer, or
  // UINT64_MAX when d does not receive it. O(destinations of the token).
  uint64_t recv_slot(uint32_t source, uint32_t token, uint32_t member) const;

 private:
  void build_layout() const;

  uint32_t num_members_ = 0;
  // Per source: token t's destinations are dests_[s][offsets_[s][t] .. offsets_[s][t+1]).
  std::vector<std::vector<uint32_t>> offsets_;
  std::vector<std::vector<uint32_t>> dests_;
  // Layout (built on first use after a change): per (source, member) counts and starts,
  // and per (source, token, k-th destination) the slot.
  mutable bool layout_valid_ = false;
  mutable std::vector<uint64_t> count_;  // [s * n + d]
  mutable std::vector<uint64_t> start_;  // [s * n + d]
  mutable std::vector<uint64_t> total_;  // [d]
  mutable std::vector<std::vector<uint64_t>> slot_;  // [s][offsets_[s][t] + k]
};

// The arguments of all_to_all_v, in bytes. Every table has n x n entries.
struct AllToAllVArgs {
  std::span<const GlobalAddr> send;        // per member
  std::span<const GlobalAddr> recv;        // per member
  std::span<const uint64_t> send_bytes;    // [s * n + d]: bytes member s sends to d
  std::span<const uint64_t> send_offsets;  // [s * n + d]: from send[s] + this
  std::span<const uint64_t> recv_bytes;    // [d * n + s]: bytes d expects from s (must equal)
  std::span<const uint64_t> recv_offsets;  // [d * n + s]: into recv[d] + this
};

struct CommState;

class Communicator {
 public:
  // A communicator over `members` (distinct, any order; rank = index). Opens 2 endpoints
  // per member (3 once a hierarchical token all-to-all runs), a barrier group, and the
  // symmetric scratch.
  // kInvalidArgument: empty group, a duplicate member, an NPU or die out of range, a
  // scratch size too small, a mode the transport cannot serve. Transport, memory and the
  // driver outlive the communicator.
  static StatusOr<std::unique_ptr<Communicator>> create(Transport& transport,
                                                        mem::GlobalMemory& memory,
                                                        std::span<const CommMember> members,
                                                        const CommConfig& config = {});
  // Members are die 0 of each NPU.
  static StatusOr<std::unique_ptr<Communicator>> create(Transport& transport,
                                                        mem::GlobalMemory& memory,
                                                        std::span<const dev::NpuId> npus,
                                                        const CommConfig& config = {});
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  uint32_t size() const;
  const CommMember& member(uint32_t rank) const;
  // The rank of (npu, die), or -1.
  int rank_of(dev::NpuId npu, uint32_t die = 0) const;
  Mode mode() const;
  uint64_t scratch_half_bytes() const;
  // False after a transport failure (see the header note).
  bool healthy() const;

  // The per-member addresses (rank order) of a kSymmetric allocation over (at least) the
  // members' NPUs. kInvalidArgument when a member's NPU has no part. Two dies of one NPU
  // get the same address: give them distinct offsets yourself.
  StatusOr<std::vector<GlobalAddr>> addresses_of(const mem::Allocation& allocation) const;

  // What the members' endpoints did so far, summed (puts, bytes delivered, resends...).
  EndpointStats transport_stats() const;

  // A member's modelled clock (the latest of its timelines), and a way to move it later (a
  // dependency on work outside the communicator).
  ModelTime member_time(uint32_t rank) const;
  void advance_member(uint32_t rank, ModelTime t);

  // Member s's bytes [d x bytes_per_peer, +bytes_per_peer) of send[s] land at
  // recv[d] + s x bytes_per_peer.
  StatusOr<CollectiveResult> all_to_all(std::span<const GlobalAddr> send,
                                        std::span<const GlobalAddr> recv,
                                        uint64_t bytes_per_peer);
  StatusOr<CollectiveResult> all_to_all_v(const AllToAllVArgs& args);
  // recv[d] = reduction over members of send[member] (count elements). recv may equal send.
  StatusOr<CollectiveResult> all_reduce(std::span<const GlobalAddr> send,
                                        std::span<const GlobalAddr> recv, uint64_t count,
                                        DataType type, ReduceOp op);
  // send[s] holds n x recv_count elements; recv[d] = reduction over s of chunk d of send[s].
  StatusOr<CollectiveResult> reduce_scatter(std::span<const GlobalAddr> send,
                                            std::span<const GlobalAddr> recv,
                                            uint64_t recv_count, DataType type, ReduceOp op);
  // recv[d] + s x bytes_per_member = send[s] (bytes_per_member bytes).
  StatusOr<CollectiveResult> all_gather(std::span<const GlobalAddr> send,
                                        std::span<const GlobalAddr> recv,
                                        uint64_t bytes_per_member);
  // buffers[root] is copied to every other member's buffers[d] (bytes bytes).
  StatusOr<CollectiveResult> broadcast(std::span<const GlobalAddr> buffers, uint64_t bytes,
                                       uint32_t root);
  StatusOr<CollectiveResult> barrier();
  // send[s] holds routes.num_tokens(s) tokens of token_bytes; recv[d] receives
  // routes.recv_tokens(d) tokens in the layout of TokenRoutes.
  StatusOr<CollectiveResult> token_all_to_all(const TokenRoutes& routes,
                                              std::span<const GlobalAddr> send,
                                              std::span<const GlobalAddr> recv,
                                              uint64_t token_bytes, TokenAlgorithm algorithm);

 private:
  explicit Communicator(std::unique_ptr<CommState> state);
  std::unique_ptr<CommState> state_;
};

}  // namespace moe::ic
