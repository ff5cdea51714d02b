// The fabric timing model: routes, ports, striping, contention, packet fates.
//
// Model (flow level, deterministic, no event queue):
//  - Every link is full duplex; each direction is a *port* with its own bandwidth, latency
//    and busy-until time. Port 2*l carries link l from a to b, port 2*l+1 from b to a.
//  - A route on a plane is: the source NPU's link up to its switch, the shortest switch path
//    on that plane (BFS, precomputed for every switch pair), the destination NPU's link
//    down. NPUs never forward traffic.
//  - A transfer of B bytes is ceil(B / packet_bytes) packets, each carrying
//    packet_header_bytes more on the wire. Packet g goes to usable plane
//    (start + g) mod k; `start` rotates per source NPU so successive small transfers spread
//    over the planes. Each plane's share is one flow.
//  - A flow crosses its ports as a pipeline of FIFO servers: at the first port it starts at
//    max(ready, busy_until) and holds the port for wire_bytes / bandwidth; at each later
//    port its head arrives one hop latency after it left the previous one, waits for the
//    port, holds it for wire_bytes / that port's bandwidth, and its tail cannot leave before
//    it arrived. The flow ends when its tail crosses the last hop. One flow on an idle
//    two-hop path: hops x latency + wire_bytes / bandwidth. Two flows through one port
//    take twice as long; k planes carry a transfer k times faster.
//  - Ports serve in the order work is scheduled (doorbell order), which is the order a real
//    link serializes arriving traffic, except that each port remembers its latest idle gap
//    and a flow that fits there is placed in it (so a signal scheduled for the future does
//    not hold back traffic that is ready now).
//  - Faults (FaultTable): a plane down, or a link on the route down, at the transfer's ready
//    time removes that plane from the striping; going down later loses the flow's packets
//    that would leave at or after that time. Drop / corrupt faults draw per packet.
// Thread-safety: none; the driver calls it under its model lock.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "firmware-sim/faults.h"
#include "runtime/base/status.h"
#include "runtime/device/driver.h"

namespace moe::sim {

struct TransferRequest {
  dev::NpuId src = 0;
  dev::NpuId dst = 0;
  uint64_t bytes = 0;
  uint32_t plane_mask = ~0u;
  double ready_ns = 0;
  uint32_t queue = 0;  // for the fault draws
  uint64_t seq = 0;
  uint64_t extra_wire_bytes = 0;  // sub-headers of a multi-segment transfer, spread over its
                                  // flows in proportion to their packets
};

struct TransferOutcome {
  StatusCode status = StatusCode::kOk;
  double end_ns = 0;
  uint32_t packets = 0;
  uint32_t packets_lost = 0;
  uint32_t packets_corrupted = 0;
  uint32_t planes_used = 0;
  uint32_t planes_failed = 0;
  uint32_t loss_kinds = 0;  // kLoss* bits: why packets were not delivered
};
inline constexpr uint32_t kLossPlaneDown = 1, kLossLinkDown = 2, kLossDrop = 4, kLossCorrupt = 8;

// Per-port traffic since creation.
struct PortCounters {
  uint64_t bytes = 0;
  uint64_t packets = 0;
  uint64_t packets_lost = 0;
  uint64_t packets_corrupted = 0;
  double busy_ns = 0;
};

class FabricModel {
 public:
  // Builds the routing tables. kUnsupported for a topology the model cannot route (an NPU
  // linked to an NPU, an NPU with two links on one plane, switch paths over 14 hops).
  static StatusOr<std::unique_ptr<FabricModel>> create(const dev::Topology& topology);

  // Schedules a transfer between two different NPUs. When packets are not delivered (lost
  // or corrupted) their indexes within the transfer are appended to `undelivered` (which
  // may then be unsorted). `faults` must be the driver's table.
  void transfer(const TransferRequest& req, FaultTable& faults, TransferOutcome* out,
                std::vector<uint32_t>* undelivered);

  // Schedules one single-packet request from `src` to `dst` on `plane` followed by its
  // response; `visible_after_ns` delays the request's effect (ordering of kStore). Sets
  // out->end_ns to the response's arrival, and `effect_ns` to when the operation ran at the
  // destination. status != kOk means the request did not arrive (the operation did not run).
  void atomic(dev::NpuId src, dev::NpuId dst, dev::PlaneId plane, double ready_ns,
              double visible_after_ns, uint32_t queue, uint64_t seq, FaultTable& faults,
              TransferOutcome* out, double* effect_ns);

  // Sum of link latencies on the route from src to dst on the first plane that has one
  // (for the request leg of a remote read); 0 when src == dst.
  double route_latency_ns(dev::NpuId src, dev::NpuId dst) const;

  PortCounters port_counters(uint32_t port) const;
  // Payload bytes of an atomic request or response (the header comes on top).
  void set_atomic_payload_bytes(double bytes) { atomic_payload_bytes_ = bytes; }
  // The latest modelled time any flow has ended at.
  double now_ns() const { return now_ns_; }
  // Planes (bit mask) on which the NPU has a link.
  uint32_t npu_planes(dev::NpuId npu) const { return npu_planes_[npu]; }

 private:
  static constexpr uint32_t kMaxHops = 16;
  // One direction of a link: timing state and hot counters in one cache line. The port
  // remembers one idle gap before its last reservation, so a flow that is ready earlier
  // and fits there (a small packet behind a reservation placed in the future) uses it.
  struct alignas(64) Port {
    double busy_until = 0;  // end of the last reservation
    double gap_start = 0;   // [gap_start, gap_end): idle time before it
    double gap_end = 0;
    double ns_per_byte = 0;
    double latency_ns = 0;
    uint64_t bytes = 0;
    uint64_t packets = 0;
    double busy_ns = 0;
  };
  // Places `dur` ns of work on a port no earlier than `earliest`; returns its start.
  static double reserve(Port& p, double earliest, double dur);
  struct Route {
    uint32_t ports[kMaxHops];
    uint32_t hops = 0;
  };
  struct SwitchPath {
    uint32_t offset = 0;
    uint32_t hops = 0;  // kNoPath when unreachable
  };
  static constexpr uint32_t kNoPath = ~0u;

  explicit FabricModel(const dev::Topology& topology);
  Status build();
  // The route from src to dst on a plane; false when there is none.
  bool route(dev::NpuId src, dev::NpuId dst, dev::PlaneId plane, Route* out) const;
  // Times one flow of `n` packets and `wire_bytes` over a route starting at `ready`; fills
  // each hop's start time when `hop_start` is not null. Returns when the tail arrives.
  double run_flow(const Route& r, double ready, uint64_t wire_bytes, uint32_t n,
                  double* hop_start);
  // Slow path: decides the fate of each packet of a flow under faults. Returns the number
  // not delivered and updates counters; `first_packet`, `stride`: global packet indexes.
  void flow_fates(const Route& r, dev::PlaneId plane, const double* hop_start, uint64_t wire_bytes,
                  uint32_t n, uint32_t first_packet, uint32_t stride, uint32_t queue,
                  uint64_t seq, FaultTable& faults, TransferOutcome* out,
                  std::vector<uint32_t>* undelivered);
  bool route_down_at(const Route& r, double t, const FaultTable& faults) const;

  const dev::Topology& topo_;
  uint32_t num_planes_ = 0;
  std::vector<Port> ports_;
  std::vector<uint64_t> port_lost_, port_corrupted_;  // rare: kept apart from the hot line
  // Per (npu * num_planes + plane): port up to the switch, port down from it, the switch's
  // index among its plane's switches.
  std::vector<uint32_t> up_port_, down_port_, attach_;
  std::vector<uint32_t> npu_planes_;
  // Per plane: number of switches and base index into switch_paths_ (a x S + b).
  std::vector<uint32_t> plane_switches_, plane_path_base_;
  std::vector<SwitchPath> switch_paths_;
  std::vector<uint32_t> path_ports_;
  std::vector<uint64_t> rotation_;  // per source NPU
  uint32_t all_planes_ = 0;
  double atomic_payload_bytes_ = 16;
  double now_ns_ = 0;
};

}  // namespace moe::sim
