// Fabric timing model (see fabric_model.h for the model itself).
//
// Speed: one decode step of DeepSeek-V3 on 384 NPUs is ~12 million transfers, so the hot
// path is a few array loads per hop: each port is one cache line (timing and counters),
// routes are three table lookups (source uplink, switch path, destination downlink) into
// tables that fit in cache, and the fault machinery is skipped entirely while no fault that
// can touch a path is active.
#include "firmware-sim/fabric_model.h"

#include <algorithm>
#include <bit>
#include <deque>

namespace moe::sim {

FabricModel::FabricModel(const dev::Topology& topology) : topo_(topology) {}

StatusOr<std::unique_ptr<FabricModel>> FabricModel::create(const dev::Topology& topology) {
  std::unique_ptr<FabricModel> m(new FabricModel(topology));
  Status s = m->build();
  if (!s.ok()) return s;
  return m;
}

Status FabricModel::build() {
  const uint32_t P = topo_.num_planes;
  const uint32_t N = topo_.num_npus();
  if (P == 0 || P > dev::kMaxPlanes)
    return make_error(StatusCode::kUnsupported, "fabric: %u planes (1..%u supported)", P,
                      dev::kMaxPlanes);
  num_planes_ = P;
  all_planes_ = P == 32 ? ~0u : ((1u << P) - 1);
  ports_.resize(topo_.links.size() * 2);
  port_lost_.assign(ports_.size(), 0);
  port_corrupted_.assign(ports_.size(), 0);
  for (const dev::LinkDesc& l : topo_.links) {
    if (!(l.bandwidth_gbps > 0) || !(l.latency_ns >= 0) || l.plane >= P)
      return make_error(StatusCode::kUnsupported,
                        "fabric: link %u has bandwidth %g GB/s, latency %g ns, plane %u", l.id,
                        l.bandwidth_gbps, l.latency_ns, l.plane);
    for (int dir = 0; dir < 2; ++dir) {
      Port& p = ports_[2 * l.id + dir];
      p.ns_per_byte = 1.0 / l.bandwidth_gbps;
      p.latency_ns = l.latency_ns;
    }
  }
  // Switch indexes within their plane.
  plane_switches_.assign(P, 0);
  std::vector<uint32_t> local(topo_.switches.size());
  for (const dev::SwitchDesc& sw : topo_.switches) {
    if (sw.plane >= P)
      return make_error(StatusCode::kUnsupported, "fabric: switch %u on plane %u of %u", sw.id,
                        sw.plane, P);
    local[sw.id] = plane_switches_[sw.plane]++;
  }
  // NPU attachments.
  up_port_.assign(static_cast<size_t>(N) * P, kNoPath);
  down_port_.assign(static_cast<size_t>(N) * P, kNoPath);
  attach_.assign(static_cast<size_t>(N) * P, kNoPath);
  npu_planes_.assign(N, 0);
  // Switch adjacency per plane: (neighbour local index, port leaving towards it).
  std::vector<std::vector<std::vector<std::pair<uint32_t, uint32_t>>>> adj(P);
  for (uint32_t p = 0; p < P; ++p) adj[p].resize(plane_switches_[p]);
  for (const dev::LinkDesc& l : topo_.links) {
    const bool a_npu = l.a.kind == dev::EndpointKind::kNpu;
    const bool b_npu = l.b.kind == dev::EndpointKind::kNpu;
    if (a_npu && b_npu)
      return make_error(StatusCode::kUnsupported,
                        "fabric: link %u joins NPU %u to NPU %u directly; the model routes "
                        "through switches only",
                        l.id, l.a.id, l.b.id);
    for (const dev::Endpoint& e : {l.a, l.b}) {
      if (e.kind == dev::EndpointKind::kSwitch &&
          (e.id >= topo_.switches.size() || topo_.switches[e.id].plane != l.plane))
        return make_error(StatusCode::kUnsupported,
                          "fabric: link %u on plane %u ends at switch %u of another plane", l.id,
                          l.plane, e.id);
      if (e.kind == dev::EndpointKind::kNpu && e.id >= N)
        return make_error(StatusCode::kUnsupported, "fabric: link %u ends at unknown NPU %u",
                          l.id, e.id);
    }
    if (a_npu || b_npu) {
      const dev::NpuId npu = a_npu ? l.a.id : l.b.id;
      const uint32_t sw = a_npu ? l.b.id : l.a.id;
      const size_t i = static_cast<size_t>(npu) * P + l.plane;
      if (up_port_[i] != kNoPath)
        return make_error(StatusCode::kUnsupported, "fabric: NPU %u has two links on plane %u",
                          npu, l.plane);
      up_port_[i] = 2 * l.id + (a_npu ? 0 : 1);
      down_port_[i] = 2 * l.id + (a_npu ? 1 : 0);
      attach_[i] = local[sw];
      npu_planes_[npu] |= 1u << l.plane;
    } else {
      adj[l.plane][local[l.a.id]].push_back({local[l.b.id], 2 * l.id});
      adj[l.plane][local[l.b.id]].push_back({local[l.a.id], 2 * l.id + 1});
    }
  }
  // All-pairs switch paths per plane, by BFS from each switch.
  plane_path_base_.assign(P, 0);
  size_t total = 0;
  for (uint32_t p = 0; p < P; ++p) {
    plane_path_base_[p] = static_cast<uint32_t>(total);
    total += static_cast<size_t>(plane_switches_[p]) * plane_switches_[p];
  }
  switch_paths_.assign(total, SwitchPath{0, kNoPath});
  std::vector<uint32_t> parent_port, parent, dist;
  std::vector<uint32_t> hops_rev;
  for (uint32_t p = 0; p < P; ++p) {
    const uint32_t S = plane_switches_[p];
    for (uint32_t a = 0; a < S; ++a) {
      parent_port.assign(S, kNoPath);
      parent.assign(S, kNoPath);
      dist.assign(S, kNoPath);
      std::deque<uint32_t> frontier{a};
      dist[a] = 0;
      while (!frontier.empty()) {
        uint32_t u = frontier.front();
        frontier.pop_front();
        for (auto [v, port] : adj[p][u]) {
          if (dist[v] != kNoPath) continue;
          dist[v] = dist[u] + 1;
          parent[v] = u;
          parent_port[v] = port;
          frontier.push_back(v);
        }
      }
      for (uint32_t b = 0; b < S; ++b) {
        if (dist[b] == kNoPath) continue;
        if (dist[b] + 2 > kMaxHops)
          return make_error(StatusCode::kUnsupported,
                            "fabric: plane %u needs %u switch hops between two switches (at "
                            "most %u supported)",
                            p, dist[b], kMaxHops - 2);
        hops_rev.clear();
        for (uint32_t v = b; v != a; v = parent[v]) hops_rev.push_back(parent_port[v]);
        SwitchPath& sp = switch_paths_[plane_path_base_[p] + a * S + b];
        sp.offset = static_cast<uint32_t>(path_ports_.size());
        sp.hops = dist[b];
        path_ports_.insert(path_ports_.end(), hops_rev.rbegin(), hops_rev.rend());
      }
    }
  }
  rotation_.assign(N, 0);
  return ok_status();
}

bool FabricModel::route(dev::NpuId src, dev::NpuId dst, dev::PlaneId plane, Route* out) const {
  const size_t si = static_cast<size_t>(src) * num_planes_ + plane;
  const size_t di = static_cast<size_t>(dst) * num_planes_ + plane;
  if (up_port_[si] == kNoPath || up_port_[di] == kNoPath) return false;
  const uint32_t S = plane_switches_[plane];
  const SwitchPath& sp = switch_paths_[plane_path_base_[plane] + attach_[si] * S + attach_[di]];
  if (sp.hops == kNoPath) return false;
  out->ports[0] = up_port_[si];
  const uint32_t* mid = path_ports_.data() + sp.offset;
  for (uint32_t h = 0; h < sp.hops; ++h) out->ports[1 + h] = mid[h];
  out->ports[1 + sp.hops] = down_port_[di];
  out->hops = sp.hops + 2;
  return true;
}

double FabricModel::route_latency_ns(dev::NpuId src, dev::NpuId dst) const {
  if (src == dst) return 0;
  Route r;
  for (dev::PlaneId p = 0; p < num_planes_; ++p) {
    if (!route(src, dst, p, &r)) continue;
    double lat = 0;
    for (uint32_t h = 0; h < r.hops; ++h) lat += ports_[r.ports[h]].latency_ns;
    return lat;
  }
  return 0;
}

bool FabricModel::route_down_at(const Route& r, double t, const FaultTable& faults) const {
  for (uint32_t h = 0; h < r.hops; ++h)
    if (faults.link_down_at(r.ports[h] / 2) <= t) return true;
  return false;
}

double FabricModel::reserve(Port& p, double earliest, double dur) {
  if (earliest >= p.busy_until) {
    if (earliest > p.busy_until) {
      p.gap_start = p.busy_until;
      p.gap_end = earliest;
    }
    p.busy_until = earliest + dur;
    return earliest;
  }
  const double in_gap = std::max(earliest, p.gap_start);
  if (in_gap + dur <= p.gap_end) {
    p.gap_start = in_gap + dur;
    return in_gap;
  }
  const double start = p.busy_until;
  p.busy_until = start + dur;
  return start;
}

PortCounters FabricModel::port_counters(uint32_t port) const {
  const Port& p = ports_[port];
  return PortCounters{p.bytes, p.packets, port_lost_[port], port_corrupted_[port], p.busy_ns};
}

double FabricModel::run_flow(const Route& r, double ready, uint64_t wire_bytes, uint32_t n,
                             double* hop_start) {
  const double w = static_cast<double>(wire_bytes);
  Port& first = ports_[r.ports[0]];
  double dur = w * first.ns_per_byte;
  double start = reserve(first, ready, dur);
  double tail = start + dur;
  first.bytes += wire_bytes;
  first.packets += n;
  first.busy_ns += dur;
  if (hop_start != nullptr) hop_start[0] = start;
  double lat = first.latency_ns;
  for (uint32_t h = 1; h < r.hops; ++h) {
    Port& p = ports_[r.ports[h]];
    dur = w * p.ns_per_byte;
    start = reserve(p, start + lat, dur);
    tail = std::max(start + dur, tail + lat);
    p.bytes += wire_bytes;
    p.packets += n;
    p.busy_ns += dur;
    if (hop_start != nullptr) hop_start[h] = start;
    lat = p.latency_ns;
  }
  return tail + lat;
}

void FabricModel::flow_fates(const Route& r, dev::PlaneId plane, const double* hop_start,
                             uint64_t wire_bytes, uint32_t n, uint32_t first_packet,
                             uint32_t stride, uint32_t queue, uint64_t seq, FaultTable& faults,
                             TransferOutcome* out, std::vector<uint32_t>* undelivered) {
  const double packet_wire = static_cast<double>(wire_bytes) / n;
  double packet_ns[kMaxHops], link_at[kMaxHops];
  for (uint32_t h = 0; h < r.hops; ++h) {
    packet_ns[h] = packet_wire * ports_[r.ports[h]].ns_per_byte;
    link_at[h] = faults.link_down_at(r.ports[h] / 2);
  }
  const double plane_at = faults.plane_down_at(plane);
  const std::vector<PacketFault>& pf = faults.packet_faults();
  // For each packet fault, the hop it applies to on this route (-1: not on it).
  int fault_hop[32];
  const size_t nf = std::min<size_t>(pf.size(), 32);
  for (size_t f = 0; f < nf; ++f) {
    fault_hop[f] = -1;
    if (pf[f].link == dev::kInvalidId) {
      fault_hop[f] = -2;  // every link: chosen per packet
    } else {
      for (uint32_t h = 0; h < r.hops; ++h)
        if (r.ports[h] / 2 == pf[f].link) fault_hop[f] = static_cast<int>(h);
    }
  }
  const uint64_t per_packet_bytes = wire_bytes / n;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t g = first_packet + i * stride;
    int lost_hop = -1, corrupt_hop = -1;
    uint32_t kind = 0;
    if (hop_start[0] + i * packet_ns[0] >= plane_at) {
      lost_hop = 0;
      kind = kLossPlaneDown;
    } else {
      for (uint32_t h = 0; h < r.hops && lost_hop < 0; ++h)
        if (hop_start[h] + i * packet_ns[h] >= link_at[h]) {
          lost_hop = static_cast<int>(h);
          kind = kLossLinkDown;
        }
    }
    for (size_t f = 0; f < nf && lost_hop < 0 && corrupt_hop < 0; ++f) {
      int hop = fault_hop[f];
      if (hop == -1) continue;
      if (hop == -2) {
        double pick = faults.draw(pf[f].id, queue, seq ^ (1ull << 63), g);
        hop = std::min<int>(static_cast<int>(pick * r.hops), static_cast<int>(r.hops) - 1);
      }
      if (hop_start[hop] + i * packet_ns[hop] < pf[f].at_ns) continue;
      if (faults.draw(pf[f].id, queue, seq, g) >= pf[f].rate) continue;
      if (pf[f].corrupt) {
        corrupt_hop = hop;
        kind = kLossCorrupt;
      } else {
        lost_hop = hop;
        kind = kLossDrop;
      }
    }
    if (kind == 0) continue;
    out->loss_kinds |= kind;
    out->planes_failed |= 1u << plane;
    undelivered->push_back(g);
    if (corrupt_hop >= 0) {
      ++out->packets_corrupted;
      ++port_corrupted_[r.ports[corrupt_hop]];
      ++faults.counters.packets_corrupted;
      continue;
    }
    ++out->packets_lost;
    ++port_lost_[r.ports[lost_hop]];
    for (uint32_t h = static_cast<uint32_t>(lost_hop) + 1; h < r.hops; ++h) {
      ports_[r.ports[h]].packets -= 1;
      ports_[r.ports[h]].bytes -= per_packet_bytes;
    }
    if (kind == kLossDrop)
      ++faults.counters.packets_dropped;
    else
      ++faults.counters.packets_lost_plane_down;
  }
}

void FabricModel::transfer(const TransferRequest& q, FaultTable& faults, TransferOutcome* out,
                           std::vector<uint32_t>* undelivered) {
  *out = TransferOutcome{};
  out->end_ns = q.ready_ns;
  const uint64_t pb = topo_.packet_bytes;
  const uint64_t header = topo_.packet_header_bytes;
  const uint64_t packets = (q.bytes + pb - 1) / pb;
  if (packets == 0) return;
  const bool faulty = faults.any_path_fault();
  uint32_t usable = q.plane_mask & all_planes_ & npu_planes_[q.src] & npu_planes_[q.dst];
  Route routes[dev::kMaxPlanes];
  dev::PlaneId plane_of[dev::kMaxPlanes];
  uint32_t k = 0;
  bool plane_down = false, link_down = false;
  while (usable != 0) {
    const dev::PlaneId p = static_cast<dev::PlaneId>(std::countr_zero(usable));
    usable &= usable - 1;
    if (faulty && faults.plane_down_at(p) <= q.ready_ns) {
      plane_down = true;
      continue;
    }
    if (!route(q.src, q.dst, p, &routes[k])) continue;
    if (faulty && faults.any_link_down() && route_down_at(routes[k], q.ready_ns, faults)) {
      link_down = true;
      continue;
    }
    plane_of[k++] = p;
  }
  if (k == 0) {
    out->status = plane_down  ? StatusCode::kPlaneDown
                  : link_down ? StatusCode::kLinkDown
                              : StatusCode::kNodeUnreachable;
    return;
  }
  out->packets = static_cast<uint32_t>(packets);
  const uint64_t start = rotation_[q.src] % k;
  rotation_[q.src] += packets;
  const uint64_t used = std::min<uint64_t>(k, packets);
  const uint64_t base = packets / k, extra = packets % k;
  const uint64_t last_slot = (packets - 1) % k;
  const uint64_t short_bytes = packets * pb - q.bytes;
  double end = q.ready_ns;
  uint64_t extra_left = q.extra_wire_bytes;
  for (uint64_t j = 0; j < used; ++j) {
    const uint64_t idx = (start + j) % k;
    const uint64_t n = base + (j < extra ? 1 : 0);
    const uint64_t extra = j + 1 == used ? extra_left : q.extra_wire_bytes * n / packets;
    extra_left -= extra;
    const uint64_t wire = n * (pb + header) - (j == last_slot ? short_bytes : 0) + extra;
    double flow_end;
    if (!faulty) {
      flow_end = run_flow(routes[idx], q.ready_ns, wire, static_cast<uint32_t>(n), nullptr);
    } else {
      double hop_start[kMaxHops];
      flow_end = run_flow(routes[idx], q.ready_ns, wire, static_cast<uint32_t>(n), hop_start);
      flow_fates(routes[idx], plane_of[idx], hop_start, wire, static_cast<uint32_t>(n),
                 static_cast<uint32_t>(j), k, q.queue, q.seq, faults, out, undelivered);
    }
    end = std::max(end, flow_end);
    out->planes_used |= 1u << plane_of[idx];
  }
  out->end_ns = end;
  now_ns_ = std::max(now_ns_, end);
  if (out->loss_kinds & kLossPlaneDown) out->status = StatusCode::kPlaneDown;
  else if (out->loss_kinds & kLossLinkDown) out->status = StatusCode::kLinkDown;
  else if (out->loss_kinds & kLossDrop) out->status = StatusCode::kPacketLost;
  else if (out->loss_kinds & kLossCorrupt) out->status = StatusCode::kPacketCorrupt;
}

void FabricModel::atomic(dev::NpuId src, dev::NpuId dst, dev::PlaneId plane, double ready_ns,
                         double visible_after_ns, uint32_t queue, uint64_t seq,
                         FaultTable& faults, TransferOutcome* out, double* effect_ns) {
  *out = TransferOutcome{};
  out->end_ns = ready_ns;
  *effect_ns = ready_ns;
  Route request, response;
  if (plane >= num_planes_ || !route(src, dst, plane, &request) ||
      !route(dst, src, plane, &response)) {
    out->status = StatusCode::kNodeUnreachable;
    return;
  }
  const bool faulty = faults.any_path_fault();
  if (faulty && faults.plane_down_at(plane) <= ready_ns) {
    out->status = StatusCode::kPlaneDown;
    return;
  }
  if (faulty && faults.any_link_down() &&
      (route_down_at(request, ready_ns, faults) || route_down_at(response, ready_ns, faults))) {
    out->status = StatusCode::kLinkDown;
    return;
  }
  const uint64_t wire =
      static_cast<uint64_t>(atomic_payload_bytes_) + topo_.packet_header_bytes;
  out->packets = 1;
  out->planes_used = 1u << plane;
  double hop_start[kMaxHops];
  double arrive = run_flow(request, ready_ns, wire, 1, hop_start);
  if (faulty) {
    std::vector<uint32_t> lost;
    flow_fates(request, plane, hop_start, wire, 1, 0, 1, queue, seq, faults, out, &lost);
    if (out->loss_kinds != 0) {
      out->end_ns = arrive;
      now_ns_ = std::max(now_ns_, arrive);
      out->status = (out->loss_kinds & kLossPlaneDown)  ? StatusCode::kPlaneDown
                    : (out->loss_kinds & kLossLinkDown) ? StatusCode::kLinkDown
                    : (out->loss_kinds & kLossDrop)     ? StatusCode::kPacketLost
                                                        : StatusCode::kPacketCorrupt;
      return;
    }
  }
  *effect_ns = std::max(arrive, visible_after_ns);
  out->end_ns = run_flow(response, *effect_ns, wire, 1, nullptr);
  now_ns_ = std::max(now_ns_, out->end_ns);
}

}  // namespace moe::sim
