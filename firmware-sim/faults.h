// Injected faults of the simulated supernode, and the deterministic draws that decide which
// packets they hit.
//
// Contract:
//  - inject() validates the target (link, plane or NPU id; rate in (0, 1]; HBM range inside
//    the NPU's capacity) and records the fault; clear() removes it. Ids start at 1 and are
//    never reused, so the same sequence of calls gives the same ids.
//  - A fault takes effect at its modelled time `at`: work that the timing model places at
//    or after `at` sees it; work placed earlier does not. clear() acts at once, for all
//    work scheduled afterwards.
//  - Packet drop and corrupt decisions are a counter-based hash of (seed, fault id, queue
//    id, transfer sequence number in that queue, packet index): reproducible from the seed,
//    independent of wall time and of other queues' traffic.
// Thread-safety: none; the driver holds its model lock around every call, except
// npu_lost_now(), which any thread may call (an atomic flag per NPU).
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/device/driver.h"

namespace moe::sim {

inline constexpr double kNever = std::numeric_limits<double>::infinity();

// A packet-level fault (drop or corrupt) as the fabric model consumes it.
struct PacketFault {
  dev::FaultId id = 0;
  bool corrupt = false;           // false: drop
  dev::LinkId link = dev::kInvalidId;  // kInvalidId: every link
  double rate = 0;
  double at_ns = 0;
};

struct HbmErrorRange {
  dev::FaultId id = 0;
  uint64_t offset = 0;
  uint64_t bytes = 0;
  double at_ns = 0;
};

class FaultTable {
 public:
  FaultTable(const dev::Topology& topology, uint64_t seed);

  Status inject(const dev::FaultSpec& fault, dev::FaultId* out);
  // `now_ns`: the modelled time the fabric has reached (recorded as the link's "since").
  Status clear(dev::FaultId fault, double now_ns);

  // True when any fault that can affect a fabric path (plane, link, packet) is active.
  bool any_path_fault() const { return path_faults_ > 0; }
  bool any_link_down() const { return links_down_total_ > 0; }
  bool any_npu_lost() const { return npus_lost_total_ > 0; }
  bool any_hbm_error() const { return hbm_errors_total_ > 0; }

  // Modelled time from which the plane / link is down, or the NPU lost; kNever when not.
  double plane_down_at(dev::PlaneId plane) const { return plane_down_at_[plane]; }
  double link_down_at(dev::LinkId link) const { return link_down_at_[link]; }
  double npu_lost_at(dev::NpuId npu) const { return npu_lost_at_[npu]; }
  // Whether the NPU is lost now (a fault is active on it, whatever its `at`). Thread-safe.
  bool npu_lost_now(dev::NpuId npu) const {
    return npu_lost_flag_[npu].load(std::memory_order_acquire);
  }
  const std::vector<PacketFault>& packet_faults() const { return packet_faults_; }
  // True when [offset, offset+bytes) of `npu` overlaps an HBM error active at `time_ns`.
  bool hbm_error(dev::NpuId npu, uint64_t offset, uint64_t bytes, double time_ns) const;

  // A uniform draw in [0, 1) for one packet and one fault.
  double draw(dev::FaultId fault, uint32_t queue, uint64_t seq, uint64_t packet) const;

  // State of a link or plane at modelled time `now_ns`.
  dev::LinkState link_state(dev::LinkId link, double now_ns) const;
  dev::PlaneState plane_state(dev::PlaneId plane, double now_ns) const;

  // Counters: the driver and the fabric model add to these.
  dev::FaultCounters counters;
  // Per NPU: operations that failed on an HBM error there.
  std::vector<uint32_t> hbm_errors_reported;

 private:
  struct Record {
    dev::FaultSpec spec;
    bool active = true;
  };
  void rebuild();

  const dev::Topology& topo_;
  uint64_t seed_;
  std::vector<Record> faults_;  // index = id - 1
  std::vector<double> plane_down_at_;
  std::vector<double> link_down_at_;
  std::vector<double> npu_lost_at_;
  std::unique_ptr<std::atomic<bool>[]> npu_lost_flag_;
  std::vector<PacketFault> packet_faults_;
  std::vector<std::vector<HbmErrorRange>> hbm_errors_;  // per NPU
  std::vector<double> link_since_;   // last change of the link's own state
  std::vector<double> plane_since_;  // last change of the plane's state
  uint32_t path_faults_ = 0;
  uint32_t links_down_total_ = 0;
  uint32_t npus_lost_total_ = 0;
  uint32_t hbm_errors_total_ = 0;
};

}  // namespace moe::sim
