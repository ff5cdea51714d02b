// The fabric timing model: routes, ports, striping, contention, packet fates.
//
// Model (flow level, deterministic, no event queue):
//  - Every link is full duplex; each direction is a *port* with its own bandwidth and
//    latency. Port 2*l carries link l from a to b, port 2*l+1 from b to a.
//  - A route on a plane is: the source NPU's link up to its switch, the shortest switch path
//    on that plane (BFS, precomputed for every switch pair), the destination NPU's link
//    down. NPUs never forward traffic.
//  - A transfer of B bytes is ceil(B / packet_bytes) packets, each carrying
//    packet_header_bytes more on the wire. Packet g goes to usable plane
//    (start + g) mod k; `start` rotates per source NPU so successive small transfers spread
//    over the planes. Each plane's share is one flow.
//  - A flow crosses its ports as a pipeline: at each port its head arrives one hop latency
//    after it left the previous one, it is served for wire_bytes / that port's bandwidth,
//    and its tail cannot leave before it arrived. The flow ends when its tail crosses the
//    last hop. One flow on an idle two-hop path: hops x latency + wire_bytes / bandwidth.
//  - A port is a fluid server remembering its current *busy period*: when it started, when
//    it ends, how much work it holds, and where its final gap-free block begins. Work
//    arriving after the period ends starts a new one, work arriving in the final block
//    queues at its end (exact FIFO for traffic scheduled in time order). Work arriving
//    earlier (the driver schedules doorbell by doorbell, so arrivals come out of time order)
//    first uses the idle time before the period and the period's idle time after its
//    arrival (assumed spread evenly before the final block); what does not fit extends the
//    period. Two flows through one port take
//    twice as long; a port fed faster than it drains stays busy from the first arrival for
//    the total work; k planes carry a transfer k times faster.
//  - A switch-to-switch port that cannot be oversubscribed (its bandwidth is at least the
//    sum of the ports that can feed it, or of the ports it can feed) never queues: it adds
//    its latency and counts its traffic. With the presets' non-blocking L2, contention is
//    modelled where it happens, on the NPU links.
//  - Plane bundles (speed): when every plane has the same shape (the presets), the ports at
//    one position on all planes form a bundle. A transfer striped over all planes then
//    costs one flow over bundles instead of one per plane, while its bundles' planes have
//    one common state. A bundle that sees traffic on some planes only (a mask, a single
//    packet, a fault) splits into per-plane states, and merges again when a striped flow
//    finds all its planes idle. Counters are kept per plane exactly either way.
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

inline constexpr uint32_t kLossPlaneDown = 1, kLossLinkDown = 2, kLossDrop = 4, kLossCorrupt = 8;

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

// Per-port traffic since creation.
struct PortCounters {
  uint64_t bytes = 0;    // wire bytes, headers included
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
  // or corrupted) their indexes within the transfer are appended to `undelivered` (unsorted).
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
  // The latest modelled time any flow has ended at.
  double now_ns() const { return now_ns_; }
  // Whether striped transfers take the plane-bundle fast path (the topology is symmetric).
  bool bundled() const { return symmetric_; }
  // Payload bytes of an atomic request or response (the header comes on top).
  void set_atomic_payload_bytes(double bytes) { atomic_payload_bytes_ = bytes; }

 private:
  static constexpr uint32_t kMaxHops = 16;
  static constexpr uint32_t kNoPath = ~0u;
  static constexpr uint32_t kLaneStride = 16;  // >= planes; lanes of a bundle are contiguous

  // A port's busy period: [start, until) holding `work` ns of service, of which the final
  // block [tail, until) is known to be busy without a gap.
  struct Period {
    double start = 0;
    double tail = 0;
    double until = 0;
    double work = 0;
  };
  struct Bundle {
    Period shared;  // the common state of all planes, while `uniform`
    double ns_per_byte = 0;
    double latency_ns = 0;
    uint32_t nonblocking = 0;
    uint32_t uniform = 0;
    // Traffic every plane of the bundle carried alike (striped transfers): added to each
    // plane's own counters when they are read.
    uint64_t all_lanes_bytes = 0;
    uint64_t all_lanes_packets = 0;
  };
  // How a striped transfer spreads over the planes: every plane carries `base_packets`
  // (`base_bytes` on the wire), the `extra_lanes` one packet more, and the plane with the
  // last packet `short_bytes` less.
  struct Stripe {
    uint64_t base_packets = 0;
    uint64_t base_bytes = 0;
    uint32_t extra_lanes[dev::kMaxPlanes];
    uint32_t num_extra = 0;
    uint32_t short_lane = 0;
    uint64_t short_bytes = 0;
    uint64_t packet_wire = 0;
    uint64_t total_wire = 0;
  };
  struct Route {  // ports of one plane
    uint32_t ports[kMaxHops];
    uint32_t hops = 0;
  };
  struct SwitchPath {
    uint32_t offset = 0;
    uint32_t hops = kNoPath;
  };

  explicit FabricModel(const dev::Topology& topology);
  Status build();
  void detect_symmetry();

  // Serves `dur` ns of work arriving at `arrive`; sets *start (when service begins) and
  // returns when it completes. The common cases inline; arrivals into gaps out of line.
  static double serve(Period& p, double arrive, double dur, double* start) {
    if (arrive >= p.until) {  // the port is idle: a new busy period
      p.start = p.tail = arrive;
      p.until = arrive + dur;
      p.work = dur;
      *start = arrive;
      return arrive + dur;
    }
    if (arrive >= p.tail) {  // inside the final busy block: queue at its end
      *start = p.until;
      p.until += dur;
      p.work += dur;
      return p.until;
    }
    return serve_in_gaps(p, arrive, dur, start);
  }
  static double serve_in_gaps(Period& p, double arrive, double dur, double* start);

  bool route(dev::NpuId src, dev::NpuId dst, dev::PlaneId plane, Route* out) const;
  Period& lane_period(uint32_t port);
  // One plane's flow of `n` packets and `wire_bytes`; fills hop_start when not null.
  double run_flow(const Route& r, double ready, uint64_t wire_bytes, uint32_t n,
                  double* hop_start);
  // A flow striped over every plane of a symmetric topology. Returns when its last plane
  // ends.
  double run_striped(dev::NpuId src, dev::NpuId dst, double ready, const Stripe& stripe);
  void flow_fates(const Route& r, dev::PlaneId plane, const double* hop_start, uint64_t wire_bytes,
                  uint32_t n, uint32_t first_packet, uint32_t stride, uint32_t queue,
                  uint64_t seq, FaultTable& faults, TransferOutcome* out,
                  std::vector<uint32_t>* undelivered);
  bool route_down_at(const Route& r, double t, const FaultTable& faults) const;

  const dev::Topology& topo_;
  uint32_t num_planes_ = 0;
  uint32_t all_planes_ = 0;
  double inv_planes_ = 1;
  // Ports: which bundle and lane (plane) each belongs to.
  std::vector<uint32_t> port_bundle_, port_lane_;
  std::vector<Bundle> bundles_;
  // Per (bundle * kLaneStride + lane): per-plane state and counters.
  std::vector<Period> lane_period_;
  std::vector<uint64_t> lane_bytes_, lane_packets_, lane_lost_, lane_corrupted_;
  // Per (npu * num_planes + plane): port up to the switch, port down from it, the switch's
  // index among its plane's switches.
  std::vector<uint32_t> up_port_, down_port_, attach_;
  std::vector<uint32_t> npu_planes_;
  // Per plane: number of switches and base index into switch_paths_ (a x S + b).
  std::vector<uint32_t> plane_switches_, plane_path_base_;
  std::vector<SwitchPath> switch_paths_;
  std::vector<uint32_t> path_ports_;
  // Symmetric topologies: bundle routes (plane 0's structure, in bundles).
  bool symmetric_ = false;
  std::vector<uint32_t> up_bundle_, down_bundle_, attach0_;  // per npu
  std::vector<uint32_t> path_bundles_;             // parallel to path_ports_ for plane 0
  // Per switch pair of plane 0 (a x S + b): whether its switch hops are non-blocking and at
  // least as fast as any NPU link (then they only add latency: `mid_latency_ns`), and the
  // traffic striped transfers sent along it (added to its bundles' counters when read).
  struct PairPath {
    uint32_t pure = 0;
    double mid_latency_ns = 0;
    uint64_t bytes = 0;
    uint64_t packets = 0;
  };
  std::vector<PairPath> pair_paths_;
  std::vector<std::vector<uint32_t>> pairs_through_bundle_;  // bundle -> pair indexes
  std::vector<uint64_t> rotation_;  // per source NPU
  double atomic_payload_bytes_ = 16;
  double now_ns_ = 0;
};

}  // namespace moe::sim
