// The memory-semantic transport: put / get / atomics / signals on global addresses.
//
// A Transport is a small interface plus a capabilities record (TransportCaps), chosen once at
// setup by open_transport(), which asks each implementation in priority order whether it can
// serve the driver (UCX / NCCL style); the simulated Unified Bus (ub_transport.h) is the first.
// Operations are issued through an Endpoint: one issuing context, either an NPU's device
// context (the code of a kernel body running on that NPU) or the host acting for an NPU. An
// endpoint owns the driver queue it issues on and is used by one thread at a time.
//
// ---- Addresses ----
// Every address is a mem::GlobalAddr. A range may cross global pages that live on different
// NPUs (interleaving, migration): operations split at page boundaries, so a put of one range
// can reach several NPUs. Pages must not migrate while an operation on them is outstanding
// (between its issue and the quiet that completes it): the memory layer's rule for writers.
//
// ---- Completion and ordering (in the manner of OpenSHMEM 1.5 and NVSHMEM) ----
//  - put / put_inline / get_nbi are non-blocking. put's source must not change until the put
//    is complete; put_inline copies its bytes at the call (the source is free on return).
//    A put is *complete* when its bytes are visible at the destination.
//  - Without fence or quiet, puts (and non-fetching signals of different words) may become
//    visible in any order.
//  - fence(): every put issued before it to an NPU becomes visible before any put, signal or
//    atomic issued after it to the same NPU. It does not wait (the issuer's clock does not
//    move), unlike quiet.
//  - quiet(): every operation issued before it is complete, at the destination; the
//    endpoint's clock advances to the latest completion. quiet() also returns delivery errors
//    (see Errors).
//  - put_signal(dst, src, bytes, sig, value, op) and signal(sig, value, op): the signal word
//    is updated (set or add, atomically) only after the data of this put_signal *and every put
//    issued earlier by this endpoint to the signal word's NPU or to the data's NPU* is visible.
//    A flag observed set therefore implies the data is there: "the flag is never visible before
//    the data". Like NVSHMEM's put_signal_nbi, the call does not wait (modelled clock).
//  - get / fetch_add / compare_swap are blocking: they return with the value, and the
//    endpoint's clock advances to their completion. They are not ordered after earlier puts
//    (use fence or quiet) except that a get first sends the puts this endpoint coalesced for
//    the NPU it reads from.
//  - wait_until(flag, cmp, value): blocks until the 64-bit word at `flag` (in this endpoint's
//    NPU's HBM) satisfies the condition, polling memory, so a put from another thread or
//    endpoint can satisfy it; bounded by a wall-clock timeout (kTimeout), never hangs.
//  - barrier(group): quiet, then a dissemination barrier over the group's members; returns
//    when every member has entered it. barrier_arrive + barrier_wait split it in two so a
//    single thread can drive the endpoints of several members.
//
// ---- Modelled time ----
// Every endpoint has a modelled clock (now()). Every operation first advances the clock by its issue cost
// (IC_DEVICE_ISSUE_NS, or IC_HOST_ISSUE_NS for a host endpoint) and starts there;
// non-blocking ones leave it there, blocking ones advance it
// to their completion, quiet advances it to the completion of everything outstanding, and
// advance_to(t) expresses a dependency on compute (or anything else) finishing at t.
// The simulator executes work eagerly, so a signal may be observed in wall time before the
// waiter's modelled clock has reached the signal's modelled visibility. The transport
// therefore records, per signal word, the last few updates made by signals and atomics as
// (value after the update, modelled time it became visible at the word's NPU). When
// wait_until sees the condition hold, it takes the newest run of recorded updates whose
// values all satisfy the condition and advances the waiter's clock to the time of the oldest
// update of that run: the moment the condition became true in the model. (For a counter that
// a faster writer has already pushed further, that is the update that first crossed the
// threshold; for a flag reset and set again through signal(), the latest set.) Words written
// only by plain puts carry no record: the waiter's clock then stays where it was. Reset flags
// with signal(..., SignalOp::kSet) rather than a plain write so the record stays exact.
//
// ---- Modes ----
// Functional endpoints move real bytes; timing endpoints move none (only the fabric model
// advances; put_inline's bytes are ignored) but still perform signals and atomics, so
// protocols built on flags run unchanged. Both report modelled time. In timing mode the
// device validates only that ranges lie inside their NPU's HBM capacity (not committed), so
// large buffers can be allocated without ever being touched; addresses must still be
// mapped global addresses (the transport needs their NPU and offset).
//
// ---- Faults ----
// Lost and corrupted packets (checksum) are resent, exactly the packets not delivered, on
// the planes still up (a plane or link that failed is left out of the resend: failover), up
// to a bounded number of attempts; every byte arrives exactly once. An operation to (or
// from) an NPU that is lost fails with kNpuLost, promptly. Counters (EndpointStats and the
// process-wide "ic.*" statistics of ic_stats.h) show retransmissions and failovers.
//
// ---- Errors ----
// Bad input (an unmapped address, a size over a limit, a misaligned atomic, a flag not on
// this endpoint's NPU) is refused at the call with kInvalidArgument naming what was wrong,
// and nothing is issued. Failures of delivery (kNpuLost, retries exhausted: kPacketLost,
// kPlaneDown, ...) of non-blocking operations are returned by the next quiet(), fence(),
// signal() or put_signal() (the first such error since the last quiet; quiet clears it);
// blocking operations return their own. After an error the bytes of the failed operation
// at its destination are unspecified; everything else is unaffected.
//
// Thread-safety: a Transport's functions may be called from any thread. An Endpoint is used
// by one thread at a time (it is a single-producer context, like the queue it owns); several
// endpoints, of the same NPU or of different NPUs, may be used concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "memory/global_addr.h"
#include "runtime/base/clock.h"
#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::dev {
class Driver;
}
namespace moe::mem {
class GlobalMemory;
}

namespace moe::ic {

using mem::GlobalAddr;

// What a transport can do, fixed when it is opened. Sizes in bytes.
struct TransportCaps {
  uint32_t max_inline_bytes = 0;     // largest put_inline
  uint32_t packet_bytes = 0;         // payload of one fabric packet
  uint32_t num_planes = 0;           // planes large transfers are striped over
  uint32_t coalesce_bytes = 0;       // small puts to one NPU are buffered up to this many bytes
  uint32_t coalesce_max_put_bytes = 0;  // puts of at most this size are coalesced (0: none)
  uint32_t max_segments = 0;         // segments one coalesced fabric operation may carry
  uint32_t max_retries = 0;          // resends of one operation before it fails
  uint32_t signal_history = 0;       // updates remembered per signal word (modelled time)
  uint32_t signal_table_words = 0;   // signal words whose update times are remembered
  bool functional = false;           // endpoints may move real bytes
};

enum class Mode : uint8_t {
  kFunctional = 0,  // real bytes move
  kTiming = 1,      // only the timing model advances (signals and atomics still execute)
};

enum class Issuer : uint8_t {
  kDevice = 0,  // a kernel on the NPU issues (no extra cost)
  kHost = 1,    // the host acts for the NPU: each operation pays IC_HOST_ISSUE_NS more
};

enum class SignalOp : uint8_t {
  kSet = 0,  // *sig = value
  kAdd = 1,  // *sig += value
};

enum class Cmp : uint8_t { kEq = 0, kNe = 1, kGt = 2, kGe = 3, kLt = 4, kLe = 5 };
// Whether `word cmp value` holds (unsigned comparison).
bool compare(uint64_t word, Cmp cmp, uint64_t value);
const char* cmp_name(Cmp cmp);

struct EndpointConfig {
  dev::NpuId npu = dev::kInvalidId;  // the NPU whose fabric engine issues the operations
  Issuer issuer = Issuer::kDevice;
  Mode mode = Mode::kFunctional;
  // wait_until's default wall-clock timeout; < 0: IC_WAIT_TIMEOUT_MS.
  int64_t wait_timeout_wall_ns = -1;
};

// What one endpoint did. Plain counts, read by the endpoint's own thread.
struct EndpointStats {
  uint64_t puts = 0;             // put, put_inline and put_signal calls
  uint64_t put_bytes = 0;        // bytes they asked to move
  uint64_t gets = 0;
  uint64_t get_bytes = 0;
  uint64_t atomics = 0;          // fetch_add, compare_swap
  uint64_t signals = 0;          // signal and put_signal signal updates
  uint64_t coalesced_puts = 0;   // puts sent inside a coalesced fabric operation
  uint64_t fabric_ops = 0;       // descriptors handed to the driver, resends included
  uint64_t bytes_delivered = 0;  // payload bytes that arrived (puts and gets, each once)
  uint64_t packets_lost = 0;     // packets reported lost (dropped, plane or link down)
  uint64_t packets_corrupted = 0;  // packets that failed their checksum
  uint64_t retransmissions = 0;  // resend operations (each carries >= 1 packet)
  uint64_t retransmitted_packets = 0;
  uint64_t failovers = 0;        // resends moved off a plane that failed
  uint64_t errors = 0;           // operations that failed for good
  uint64_t waits = 0;            // wait_until calls that returned OK
};

class Group;

// One issuing context. Single-threaded (see the header note). Destroying an endpoint sends
// what is still coalesced but can report no error: call quiet() first.
class Endpoint {
 public:
  virtual ~Endpoint() = default;

  virtual dev::NpuId npu() const = 0;
  virtual Mode mode() const = 0;
  virtual Issuer issuer() const = 0;

  // ---- modelled clock ----
  virtual ModelTime now() const = 0;
  // Moves the clock to t if t is later (a dependency on work that ends at t).
  virtual void advance_to(ModelTime t) = 0;

  // ---- data ----
  // Copies `bytes` from src (any mapped global address; usually this NPU's HBM) to dst.
  // Non-blocking; small puts are coalesced per destination NPU.
  virtual Status put(GlobalAddr dst, GlobalAddr src, uint64_t bytes) = 0;
  // Puts `bytes` (<= caps().max_inline_bytes) taken from host memory at the call.
  virtual Status put_inline(GlobalAddr dst, const void* data, uint32_t bytes) = 0;
  // Copies `bytes` from src (anywhere) to dst; returns when they are there (clock advances).
  virtual Status get(GlobalAddr dst, GlobalAddr src, uint64_t bytes) = 0;
  // The same, completed by the next quiet (the clock does not advance now). In wall time the
  // bytes may already be there; rely on them only after quiet.
  virtual Status get_nbi(GlobalAddr dst, GlobalAddr src, uint64_t bytes) = 0;

  // ---- atomics on naturally aligned 64-bit words (blocking; *old set on success) ----
  virtual Status fetch_add(GlobalAddr word, uint64_t value, uint64_t* old) = 0;
  // If *word == compare then *word = desired. *old is the value before.
  virtual Status compare_swap(GlobalAddr word, uint64_t compare, uint64_t desired,
                              uint64_t* old) = 0;

  // ---- signals (see the header note for the ordering) ----
  virtual Status put_signal(GlobalAddr dst, GlobalAddr src, uint64_t bytes, GlobalAddr sig,
                            uint64_t value, SignalOp op) = 0;
  virtual Status signal(GlobalAddr sig, uint64_t value, SignalOp op) = 0;
  // signal(word, value, kSet) for every word, handed to the fabric together (one submission,
  // not one per word: a release of many waiters); each is ordered and timed as its own signal.
  // Every word is attempted; the first failure is returned, naming its word.
  virtual Status signal_many(std::span<const GlobalAddr> words, uint64_t value) = 0;

  // ---- ordering, completion, synchronisation ----
  virtual Status fence() = 0;
  virtual Status quiet() = 0;
  // `flag` must be an 8-byte aligned word in this endpoint's NPU's HBM. timeout_wall_ns < 0:
  // the endpoint's default. *observed (optional) is the value that satisfied the condition.
  virtual Status wait_until(GlobalAddr flag, Cmp cmp, uint64_t value,
                            uint64_t* observed = nullptr, int64_t timeout_wall_ns = -1) = 0;
  // Every member calls it once per barrier, through the endpoint of its NPU.
  virtual Status barrier(Group& group) = 0;
  virtual Status barrier_arrive(Group& group) = 0;
  virtual Status barrier_wait(Group& group, int64_t timeout_wall_ns = -1) = 0;

  virtual const EndpointStats& stats() const = 0;
};

// The members of a barrier and the symmetric words it synchronises on. Made by
// Transport::create_group; outlives the endpoints that use it; its memory is freed with it.
// Each member drives its own round state, so the members may run on different threads.
class Group {
 public:
  virtual ~Group() = default;
  virtual std::span<const dev::NpuId> members() const = 0;
  // The member's index in members(), or -1.
  virtual int rank_of(dev::NpuId npu) const = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const = 0;
  virtual const TransportCaps& caps() const = 0;
  // Opens an endpoint issuing for config.npu. kInvalidArgument for a bad NPU or a mode the
  // transport cannot serve; kNpuLost when the NPU is lost; driver errors on queue creation.
  virtual StatusOr<std::unique_ptr<Endpoint>> open_endpoint(const EndpointConfig& config) = 0;
  // A barrier group over distinct NPUs (at least one). Allocates symmetric words through
  // the memory layer (zeroed).
  virtual StatusOr<std::unique_ptr<Group>> create_group(std::span<const dev::NpuId> members) = 0;
};

struct TransportOptions {
  std::string name;  // "" : the first implementation that can serve; else that one only
  // Overrides of the ic options (0: the option's value).
  uint32_t coalesce_bytes = 0;
  uint32_t max_retries = 0;
};

// Asks each implementation, in priority order, whether it can serve this driver, and opens
// the first that can (or the one named). kNotFound lists the implementations and why each
// declined. The driver and memory outlive the transport; the transport outlives its
// endpoints and groups.
StatusOr<std::unique_ptr<Transport>> open_transport(dev::Driver& driver, mem::GlobalMemory& memory,
                                                    const TransportOptions& options = {});
// Names of the implementations, in priority order.
std::vector<std::string> transport_names();

}  // namespace moe::ic
