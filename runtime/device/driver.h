// The device interface: the contract a driver implements.
//
// Everything above this header (memory, interconnect, runtime, models, tools) reaches the
// hardware only through a Driver. firmware-sim/ implements it by simulation; a driver for a
// real supernode would implement the same functions and nothing above would change.
//
// Model of the hardware:
//  - NPUs, host CPUs, switches and links as described by topology().
//  - HBM per NPU, addressed by DevicePtr{npu, offset}. A range is first *reserved* (address
//    space only), then *committed* (backed by memory), then may be *mapped* for host access.
//  - Engines, each fed by queues: a compute engine per die, a fabric engine and a host-copy
//    engine per NPU. Work is written into a queue (queue_submit), started by ringing the
//    doorbell (doorbell_ring), and reported as completions (completions_poll/wait), in
//    submission order per queue.
//  - Links and planes with state and counters; faults can be injected on a simulator.
//
// Conventions for every function:
//  - Returns a Status; output parameters are written only on success.
//  - Units: bytes, nanoseconds (modelled ModelTime or wall int64), GB/s.
//  - Thread-safety: every function may be called from any thread, concurrently, except that
//    one queue must not be used by two threads at once (a queue is a single-producer ring).
//  - Blocking: only completions_wait blocks; doorbell_ring may run functional work (kernel
//    bodies, payload copies) on the calling thread before returning, but never waits for
//    another thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/base/clock.h"
#include "runtime/base/status.h"
#include "runtime/device/topology.h"
#include "runtime/device/work.h"

namespace moe::dev {

struct QueueId {
  uint32_t value = kInvalidId;
  bool valid() const { return value != kInvalidId; }
};

// A reserved range of one NPU's HBM.
struct HbmRange {
  NpuId npu = kInvalidId;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

enum class LinkHealth : uint8_t { kUp = 0, kDown = 1 };

struct LinkState {
  LinkHealth health = LinkHealth::kUp;
  ModelTime since{};  // modelled time of the last change
};

struct PlaneState {
  LinkHealth health = LinkHealth::kUp;
  uint32_t links_down = 0;  // links of this plane that are down (the plane may still be up)
};

struct NpuState {
  bool lost = false;
  uint64_t hbm_committed_bytes = 0;
  uint64_t hbm_resident_bytes = 0;  // host memory actually backing this NPU's HBM (simulation)
  uint32_t hbm_errors = 0;
};

// Per direction: [0] is a -> b, [1] is b -> a.
struct LinkCounters {
  uint64_t bytes[2] = {0, 0};
  uint64_t packets[2] = {0, 0};
  uint64_t packets_lost[2] = {0, 0};
  uint64_t packets_corrupted[2] = {0, 0};
  ModelTime busy[2] = {};  // total modelled time the direction spent sending
};

enum class FaultKind : uint8_t {
  kLinkDown = 0,       // target: link id
  kPlaneDown = 1,      // target: plane id
  kNpuLost = 2,        // target: NPU id
  kPacketDrop = 3,     // target: link id, or kInvalidId for every link; rate per packet
  kPacketCorrupt = 4,  // target: link id, or kInvalidId for every link; rate per packet
  kHbmError = 5,       // target: NPU id; range [hbm_offset, hbm_offset + hbm_bytes)
};

struct FaultSpec {
  FaultKind kind = FaultKind::kLinkDown;
  uint32_t target = kInvalidId;
  double rate = 0;        // kPacketDrop / kPacketCorrupt: probability per packet, in (0, 1]
  ModelTime at{};         // takes effect at this modelled time (0: at once)
  uint64_t hbm_offset = 0;
  uint64_t hbm_bytes = 0;
};

using FaultId = uint32_t;

struct FaultCounters {
  uint64_t faults_injected = 0;
  uint64_t packets_dropped = 0;
  uint64_t packets_corrupted = 0;
  uint64_t packets_lost_plane_down = 0;  // sent on a plane or link that was down
  uint64_t operations_to_lost_npu = 0;
  uint64_t hbm_errors_reported = 0;
};

struct DriverCaps {
  bool simulated = false;        // faults can be injected; HBM is host memory
  bool functional = false;       // payloads and kernel bodies execute
  uint32_t queue_depth_max = 0;  // descriptors a queue ring can hold
  uint32_t max_transfer_segments = 0;  // segments of one multi-segment transfer (0: none)
  uint32_t segment_header_bytes = 0;   // wire bytes each segment of one adds
};

class Driver {
 public:
  virtual ~Driver() = default;

  // ---- identity and topology ----
  // 1. Name of the driver and the machine ("firmware-sim:cm384"). Never fails.
  virtual std::string_view name() const = 0;
  // 2. What this driver can do. Never fails.
  virtual DriverCaps caps() const = 0;
  // 3. The machine: NPUs, CPUs, switches, links, rates. Valid for the driver's lifetime.
  virtual const Topology& topology() const = 0;

  // ---- HBM ----
  // 4. Reserves `bytes` (a multiple of 4 KiB, > 0) of `npu`'s HBM address space, aligned to
  //    `alignment` (a power of two >= 4 KiB). No memory is backed yet. kOutOfMemory when the
  //    NPU's capacity has no such free range; kNpuLost for a lost NPU.
  virtual Status hbm_reserve(NpuId npu, uint64_t bytes, uint64_t alignment, HbmRange* out) = 0;
  // 5. Returns a whole range obtained from hbm_reserve (decommitting what is committed).
  virtual Status hbm_release(const HbmRange& range) = 0;
  // 6. Backs [offset, offset+bytes) of a reserved range with memory; contents read as zero.
  //    Offsets and sizes are multiples of 4 KiB. Committing a committed page is a no-op.
  virtual Status hbm_commit(NpuId npu, uint64_t offset, uint64_t bytes) = 0;
  // 7. Drops the backing of committed pages; later reads of them are refused until
  //    committed again.
  virtual Status hbm_decommit(NpuId npu, uint64_t offset, uint64_t bytes) = 0;
  // 8. A host pointer through which the host reads and writes committed HBM
  //    [offset, offset+bytes) directly. Stays valid until the range is released. On a
  //    simulator this is the backing memory itself; a real driver maps a window.
  virtual Status hbm_map_host(NpuId npu, uint64_t offset, uint64_t bytes, void** host_ptr) = 0;

  // ---- engine queues ----
  // 9. Creates a queue feeding one engine. `die` is used for kCompute (0..dies_per_npu-1).
  //    `depth` descriptors fit in its ring (0: the default; at most caps().queue_depth_max).
  virtual Status queue_create(NpuId npu, uint32_t die, EngineKind engine, uint32_t depth,
                              QueueId* out) = 0;
  // 10. Destroys a queue; work not yet completed is dropped. Completions not polled are lost.
  virtual Status queue_destroy(QueueId queue) = 0;
  // 11. Copies `count` descriptors into the ring. They do not start until the doorbell.
  //     kResourceExhausted (and nothing written) when they do not all fit; kInvalidArgument
  //     names the first bad descriptor (an address outside committed HBM, a misaligned
  //     atomic, an unknown NPU).
  virtual Status queue_submit(QueueId queue, const WorkDescriptor* work, size_t count) = 0;
  // 12. Hands everything submitted so far to the engine. The simulator executes it before
  //     returning (functional work on the calling thread) and posts completions.
  virtual Status doorbell_ring(QueueId queue) = 0;
  // 13. Moves up to `max` completions, in submission order, into `out`; `*count` says how
  //     many. Never blocks.
  virtual Status completions_poll(QueueId queue, Completion* out, size_t max, size_t* count) = 0;
  // 14. Blocks until a completion is available or `timeout_wall_ns` of wall time passes
  //     (kTimeout). Returns at once when one is pending.
  virtual Status completions_wait(QueueId queue, int64_t timeout_wall_ns) = 0;
  // 15. The modelled time at which the queue's engine finishes all work handed to it so far.
  virtual Status engine_time(QueueId queue, ModelTime* out) = 0;

  // ---- links, planes, NPUs ----
  // 16. State of one link at the latest modelled time the fabric has reached.
  virtual Status link_state(LinkId link, LinkState* out) = 0;
  // 17. State of one plane (down when a plane fault is active).
  virtual Status plane_state(PlaneId plane, PlaneState* out) = 0;
  // 18. Traffic counters of one link since the driver was created.
  virtual Status link_counters(LinkId link, LinkCounters* out) = 0;
  // 19. State of one NPU (lost, HBM backing, errors).
  virtual Status npu_state(NpuId npu, NpuState* out) = 0;

  // ---- faults (simulation; a real driver returns kUnsupported from 20 and 21) ----
  // 20. Injects a fault. Deterministic: the same seed and the same sequence of calls give
  //     the same packets dropped or corrupted.
  virtual Status fault_inject(const FaultSpec& fault, FaultId* out) = 0;
  // 21. Clears an injected fault (the link, plane or NPU comes back).
  virtual Status fault_clear(FaultId fault) = 0;
  // 22. What the faults have done so far.
  virtual Status fault_counters(FaultCounters* out) = 0;

  // ---- reliability ----
  // 23. Which packets of a transfer were not delivered (lost or corrupted), so that a
  //     transport can resend exactly those: their indexes in the transfer's stream (work.h,
  //     TransferWork), ascending, packets_lost + packets_corrupted of them. `work_index` is
  //     Completion::work_index. The list can be read from when the completion is posted
  //     until the queue's next doorbell_ring after the completion was polled (a count of 0
  //     when every packet arrived or the work was not a transfer); kNotFound outside that
  //     window. Writes min(max, total) indexes to `out` and the total to `*count`. Never
  //     blocks.
  virtual Status completion_undelivered(QueueId queue, uint64_t work_index, uint32_t* out,
                                        size_t max, size_t* count) = 0;
};

}  // namespace moe::dev
