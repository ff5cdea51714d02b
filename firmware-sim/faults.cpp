// Fault table: the list of injected faults plus dense per-plane / per-link / per-NPU arrays
// rebuilt on every inject or clear (rare), so the timing model's questions are one load.
// The packet draw is splitmix64 over the mixed key, so each (fault, queue, transfer, packet)
// gets its own independent uniform value without any generator state to advance.
#include "firmware-sim/faults.h"

#include <algorithm>

namespace moe::sim {
namespace {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

const char* kind_name(dev::FaultKind kind) {
  switch (kind) {
    case dev::FaultKind::kLinkDown: return "link down";
    case dev::FaultKind::kPlaneDown: return "plane down";
    case dev::FaultKind::kNpuLost: return "NPU lost";
    case dev::FaultKind::kPacketDrop: return "packet drop";
    case dev::FaultKind::kPacketCorrupt: return "packet corrupt";
    case dev::FaultKind::kHbmError: return "HBM error";
  }
  return "unknown";
}

}  // namespace

FaultTable::FaultTable(const dev::Topology& topology, uint64_t seed)
    : topo_(topology),
      seed_(seed),
      plane_down_at_(topology.num_planes, kNever),
      link_down_at_(topology.links.size(), kNever),
      npu_lost_at_(topology.num_npus(), kNever),
      npu_lost_flag_(std::make_unique<std::atomic<bool>[]>(topology.num_npus())),
      hbm_errors_(topology.num_npus()),
      link_since_(topology.links.size(), 0.0),
      plane_since_(topology.num_planes, 0.0) {
  hbm_errors_reported.assign(topology.num_npus(), 0);
  for (uint32_t i = 0; i < topology.num_npus(); ++i) npu_lost_flag_[i].store(false);
}

Status FaultTable::inject(const dev::FaultSpec& f, dev::FaultId* out) {
  const char* what = kind_name(f.kind);
  if (!(f.at.ns >= 0) || f.at.ns == kNever)
    return make_error(StatusCode::kInvalidArgument, "fault_inject (%s): time at=%g ns is not a "
                      "finite non-negative modelled time", what, f.at.ns);
  switch (f.kind) {
    case dev::FaultKind::kLinkDown:
      if (f.target >= topo_.links.size())
        return make_error(StatusCode::kInvalidArgument,
                          "fault_inject (%s): link %u out of range (machine has %zu links)", what,
                          f.target, topo_.links.size());
      break;
    case dev::FaultKind::kPlaneDown:
      if (f.target >= topo_.num_planes)
        return make_error(StatusCode::kInvalidArgument,
                          "fault_inject (%s): plane %u out of range (machine has %u planes)",
                          what, f.target, topo_.num_planes);
      break;
    case dev::FaultKind::kNpuLost:
    case dev::FaultKind::kHbmError:
      if (f.target >= topo_.num_npus())
        return make_error(StatusCode::kInvalidArgument,
                          "fault_inject (%s): npu %u out of range (machine has %u NPUs)", what,
                          f.target, topo_.num_npus());
      if (f.kind == dev::FaultKind::kHbmError &&
          (f.hbm_bytes == 0 || f.hbm_offset >= topo_.hbm.capacity_bytes ||
           f.hbm_bytes > topo_.hbm.capacity_bytes - f.hbm_offset))
        return make_error(StatusCode::kInvalidArgument,
                          "fault_inject (%s): npu %u range [%#llx, +%llu) is empty or outside "
                          "its HBM capacity",
                          what, f.target, static_cast<unsigned long long>(f.hbm_offset),
                          static_cast<unsigned long long>(f.hbm_bytes));
      break;
    case dev::FaultKind::kPacketDrop:
    case dev::FaultKind::kPacketCorrupt:
      if (f.target != dev::kInvalidId && f.target >= topo_.links.size())
        return make_error(StatusCode::kInvalidArgument,
                          "fault_inject (%s): link %u out of range (machine has %zu links; "
                          "kInvalidId means every link)",
                          what, f.target, topo_.links.size());
      if (!(f.rate > 0 && f.rate <= 1))
        return make_error(StatusCode::kInvalidArgument,
                          "fault_inject (%s): rate %g must be in (0, 1]", what, f.rate);
      break;
    default:
      return make_error(StatusCode::kInvalidArgument, "fault_inject: unknown fault kind %u",
                        static_cast<unsigned>(f.kind));
  }
  faults_.push_back(Record{f, true});
  if (f.kind == dev::FaultKind::kLinkDown) link_since_[f.target] = f.at.ns;
  if (f.kind == dev::FaultKind::kPlaneDown) plane_since_[f.target] = f.at.ns;
  ++counters.faults_injected;
  rebuild();
  *out = static_cast<dev::FaultId>(faults_.size());
  return ok_status();
}

Status FaultTable::clear(dev::FaultId fault, double now_ns) {
  if (fault == 0 || fault > faults_.size() || !faults_[fault - 1].active)
    return make_error(StatusCode::kNotFound, "fault_clear: no active fault with id %u", fault);
  Record& r = faults_[fault - 1];
  r.active = false;
  if (r.spec.kind == dev::FaultKind::kLinkDown) link_since_[r.spec.target] = now_ns;
  if (r.spec.kind == dev::FaultKind::kPlaneDown) plane_since_[r.spec.target] = now_ns;
  rebuild();
  return ok_status();
}

void FaultTable::rebuild() {
  std::fill(plane_down_at_.begin(), plane_down_at_.end(), kNever);
  std::fill(link_down_at_.begin(), link_down_at_.end(), kNever);
  std::fill(npu_lost_at_.begin(), npu_lost_at_.end(), kNever);
  packet_faults_.clear();
  for (auto& v : hbm_errors_) v.clear();
  path_faults_ = links_down_total_ = npus_lost_total_ = hbm_errors_total_ = 0;
  for (size_t i = 0; i < faults_.size(); ++i) {
    const Record& r = faults_[i];
    if (!r.active) continue;
    const dev::FaultSpec& f = r.spec;
    const double at = f.at.ns;
    switch (f.kind) {
      case dev::FaultKind::kLinkDown:
        link_down_at_[f.target] = std::min(link_down_at_[f.target], at);
        ++links_down_total_;
        ++path_faults_;
        break;
      case dev::FaultKind::kPlaneDown:
        plane_down_at_[f.target] = std::min(plane_down_at_[f.target], at);
        ++path_faults_;
        break;
      case dev::FaultKind::kNpuLost:
        npu_lost_at_[f.target] = std::min(npu_lost_at_[f.target], at);
        ++npus_lost_total_;
        break;
      case dev::FaultKind::kPacketDrop:
      case dev::FaultKind::kPacketCorrupt:
        packet_faults_.push_back(PacketFault{static_cast<dev::FaultId>(i + 1),
                                             f.kind == dev::FaultKind::kPacketCorrupt, f.target,
                                             f.rate, at});
        ++path_faults_;
        break;
      case dev::FaultKind::kHbmError:
        hbm_errors_[f.target].push_back(
            HbmErrorRange{static_cast<dev::FaultId>(i + 1), f.hbm_offset, f.hbm_bytes, at});
        ++hbm_errors_total_;
        break;
    }
  }
  for (uint32_t n = 0; n < topo_.num_npus(); ++n)
    npu_lost_flag_[n].store(npu_lost_at_[n] != kNever, std::memory_order_release);
}

bool FaultTable::hbm_error(dev::NpuId npu, uint64_t offset, uint64_t bytes,
                           double time_ns) const {
  for (const HbmErrorRange& e : hbm_errors_[npu]) {
    if (e.at_ns > time_ns) continue;
    if (offset < e.offset + e.bytes && e.offset < offset + bytes) return true;
  }
  return false;
}

double FaultTable::draw(dev::FaultId fault, uint32_t queue, uint64_t seq,
                        uint64_t packet) const {
  uint64_t h = mix64(seed_ ^ mix64(fault));
  h = mix64(h ^ (static_cast<uint64_t>(queue) << 32));
  h = mix64(h ^ seq);
  h = mix64(h ^ packet);
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

dev::LinkState FaultTable::link_state(dev::LinkId link, double now_ns) const {
  dev::LinkState s;
  dev::PlaneId plane = topo_.links[link].plane;
  bool link_down = link_down_at_[link] <= now_ns;
  bool plane_down = plane < plane_down_at_.size() && plane_down_at_[plane] <= now_ns;
  s.health = link_down || plane_down ? dev::LinkHealth::kDown : dev::LinkHealth::kUp;
  double since = link_since_[link];
  if (plane < plane_since_.size()) since = std::max(since, plane_since_[plane]);
  s.since = ModelTime{since};
  return s;
}

dev::PlaneState FaultTable::plane_state(dev::PlaneId plane, double now_ns) const {
  dev::PlaneState s;
  s.health = plane_down_at_[plane] <= now_ns ? dev::LinkHealth::kDown : dev::LinkHealth::kUp;
  if (links_down_total_ > 0) {
    for (const dev::LinkDesc& l : topo_.links)
      if (l.plane == plane && link_down_at_[l.id] <= now_ns) ++s.links_down;
  }
  return s;
}

}  // namespace moe::sim
