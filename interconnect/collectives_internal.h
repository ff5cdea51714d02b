// Internals of the collectives shared by their source files: the communicator's state, one
// call's bookkeeping (Call), the round-based exchange every algorithm is built from, buffer
// validation and the host reduction kernels. Not part of the public API (collectives.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "interconnect/collectives.h"
#include "memory/global_memory.h"
#include "runtime/base/check.h"
#include "runtime/device/topology.h"

namespace moe::ic {

// Words of a member's flag block (kFlagBytes).
inline constexpr uint64_t kArrivalWord = 0;  // += 1 per message that reached the member
inline constexpr uint64_t kForwardWord = 1;  // += 1 per message a relay forwarded to it

// Which of a member's endpoints issues a message.
enum class Sender : uint8_t { kTx = 0, kRx = 1, kRelay = 2 };

struct MemberState {
  std::unique_ptr<Endpoint> tx;   // sends the member's own data
  std::unique_ptr<Endpoint> rx;   // observes arrivals; forwards and re-sends received data
  // Token all-to-all (opened on first use): issues the member's forwards as a relay, at the
  // arrival times of what it forwards, and observes the forwards it receives.
  std::unique_ptr<Endpoint> relay;
  double vector_ns = 0;           // the clock of the member's vector cores (reductions)
  GlobalAddr flags;               // kFlagBytes of signal words
  GlobalAddr scratch[2];          // the two scratch halves
  double drained_ns[2] = {0, 0};  // when each half was last read out (credit to writers)
  uint64_t arrivals_seen = 0;     // value of the arrival counter waited for so far
  uint64_t forwards_seen = 0;

  Endpoint& endpoint(Sender s) { return s == Sender::kTx ? *tx : s == Sender::kRx ? *rx : *relay; }
};

struct CommState {
  Transport& transport;
  mem::GlobalMemory& memory;
  const dev::Topology& topology;
  CommConfig config;
  std::vector<CommMember> members;
  std::vector<uint32_t> node_of;  // per rank
  std::vector<MemberState> m;     // per rank
  std::vector<dev::NpuId> npus;   // distinct NPUs, in order of first appearance
  std::vector<std::vector<uint32_t>> ranks_on_npu;  // per entry of npus
  std::vector<int> rank_index;    // [npu * dies_per_npu + die] -> rank, or -1
  std::vector<double> uplink_latency_ns;  // per node: its L1 -> L2 hop (plane 0)
  std::unique_ptr<Group> group;
  mem::Allocation scratch_alloc;
  uint64_t half_bytes = 0;
  uint32_t next_half = 0;
  bool broken = false;

  CommState(Transport& t, mem::GlobalMemory& mem, const dev::Topology& topo)
      : transport(t), memory(mem), topology(topo) {}
  uint32_t size() const { return static_cast<uint32_t>(members.size()); }
  bool functional() const { return config.mode == Mode::kFunctional; }
  // One small message's modelled latency from rank a's NPU to rank b's (hops x latency).
  double signal_latency_ns(uint32_t a, uint32_t b) const;
  // Modelled cost of a reduction pass reading and writing `bytes` of HBM.
  double vector_cost_ns(uint64_t bytes) const;
  double member_time_ns(uint32_t rank) const;
  void advance_member(uint32_t rank, double t_ns);
  GlobalAddr arrival_word(uint32_t rank) const { return m[rank].flags + 8 * kArrivalWord; }
  GlobalAddr forward_word(uint32_t rank) const { return m[rank].flags + 8 * kForwardWord; }
  Status open_relays();
};

// A contiguous piece of one message.
struct Piece {
  GlobalAddr from;
  GlobalAddr to;
  uint64_t bytes = 0;
};

// One message from a member to another: pieces then one signal on the receiver's counter.
struct Message {
  std::vector<Piece> pieces;
  int scratch_half = -1;  // >= 0: the pieces land in that scratch half of the receiver
  void clear() {
    pieces.clear();
    scratch_half = -1;
  }
};

// One collective call: entry (timelines aligned, start recorded), accounting, exit (quiet
// everything, result filled). A failure marks the communicator broken.
class Call {
 public:
  Call(CommState& state, const char* name);
  // kFailedPrecondition when the communicator is broken.
  Status begin();
  // Quiets every endpoint and fills *out.
  Status finish(CollectiveResult* out);
  // Marks the communicator broken; returns s with the collective's name in front.
  Status fail(Status s);

  // One message from s to d in two steps: its puts (accounting bytes; a scratch message
  // first waits for the receiver's credit on that half), then the signal adding 1 to d's
  // counter `word`, which follows every earlier put of the sender to d's NPU. Issuing all
  // puts of a phase before its signals keeps each NPU's descriptors in modelled-time order
  // (the fabric engine issues them in order, so a signal due late would hold back puts
  // issued after it). send() does both at once.
  Status put_message(uint32_t s, uint32_t d, Sender sender, const Message& msg);
  Status signal_message(uint32_t s, uint32_t d, Sender sender, GlobalAddr word);
  Status send(uint32_t s, uint32_t d, Sender sender, const Message& msg, GlobalAddr word);
  // Sends what every member's sender endpoint still coalesces (Endpoint::fence: no wait),
  // at the end of a phase's puts, so that small puts leave now, in modelled-time order,
  // rather than with the signal that would otherwise flush each.
  Status flush(Sender sender);
  // The receiver d waits for the next increment of its arrival counter.
  Status await_arrival(uint32_t d);
  Status await_forward(uint32_t d);

  // A round-based exchange. plan(s, d, msg) builds the message from s to d into *msg and
  // returns whether there is one (an empty message still signals). First every member
  // puts its data in round order (round r: s to (s + r) mod n; self messages in round 0),
  // then round by round the signals go out and each receiver waits for its one increment.
  using Plan = std::function<bool(uint32_t s, uint32_t d, Message* msg)>;
  Status exchange(Sender sender, const Plan& plan);

  CommState& state() { return st_; }
  const char* name() const { return name_; }
  uint64_t forwarded_bytes = 0;

 private:
  CommState& st_;
  const char* name_;
  int64_t wall_start_ = 0;
  double start_ns_ = 0;
  uint64_t payload_bytes_ = 0;
  uint64_t cross_node_bytes_ = 0;
  uint64_t messages_ = 0;
  Message msg_;
  std::vector<uint8_t> expect_;  // [s * n + d]: a message in this exchange
};

// ---- validation (kInvalidArgument naming `what`, the buffer, the member) ----
// Each buffers[r] must hold bytes_of(r) bytes inside one live allocation, aligned to
// `alignment`; a buffer needing 0 bytes may be null.
Status check_buffers(const CommState& st, const char* what, const char* name,
                     std::span<const GlobalAddr> buffers,
                     const std::function<uint64_t(uint32_t)>& bytes_of, uint32_t alignment);
Status check_count(const CommState& st, const char* what, const char* name, size_t got,
                   size_t want);
Status check_types(const char* what, DataType type, ReduceOp op);
// a x b x c must stay below 2^62 bytes (sizes that cannot be addressed are refused).
Status check_size(const char* what, const char* name, uint64_t a, uint64_t b, uint64_t c = 1);

// ---- host reductions (the vector cores' work) ----
// out[i] = op over k = 0..inputs.size()-1, in that order, of inputs[k][i], for `count`
// elements, through the host mappings. `out` may be one of the inputs.
Status reduce_on_host(mem::GlobalMemory& memory, DataType type, ReduceOp op,
                      std::span<const GlobalAddr> inputs, GlobalAddr out, uint64_t count);

// The reduce-scatter core: member d's result over elements [chunk_begin[d],
// +chunk_count[d]) of every send buffer goes to recv[d] + out_offset[d] elements.
Status reduce_scatter_core(Call& call, std::span<const GlobalAddr> send,
                           std::span<const GlobalAddr> recv,
                           std::span<const uint64_t> chunk_begin,
                           std::span<const uint64_t> chunk_count,
                           std::span<const uint64_t> out_offset, DataType type, ReduceOp op);

}  // namespace moe::ic
