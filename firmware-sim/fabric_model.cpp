// Fabric timing model (see fabric_model.h for the model itself).
//
// Speed: one decode step of DeepSeek-V3 on 384 NPUs is ~12 million transfers. On the
// presets every plane has the same shape, so a transfer striped over all planes is one flow
// over plane bundles: a route is three table lookups (source uplink bundle, switch path,
// destination downlink bundle), a hop is one busy-period update plus per-plane counters,
// and non-blocking switch hops only add latency. The per-plane path (masks, faults, small
// transfers, asymmetric topologies) is the same arithmetic done plane by plane. Nothing in
// the fault machinery runs while no fault that can touch a path is active.
#include "firmware-sim/fabric_model.h"

#include <algorithm>
#include <bit>
#include <deque>
#include <map>
#include <tuple>

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
  all_planes_ = (1u << P) - 1;
  inv_planes_ = 1.0 / P;
  const size_t num_ports = topo_.links.size() * 2;
  for (const dev::LinkDesc& l : topo_.links) {
    if (!(l.bandwidth_gbps > 0) || !(l.latency_ns >= 0) || l.plane >= P)
      return make_error(StatusCode::kUnsupported,
                        "fabric: link %u has bandwidth %g GB/s, latency %g ns, plane %u", l.id,
                        l.bandwidth_gbps, l.latency_ns, l.plane);
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
  // NPU attachments and the switch graph of each plane: (neighbour, port towards it).
  up_port_.assign(static_cast<size_t>(N) * P, kNoPath);
  down_port_.assign(static_cast<size_t>(N) * P, kNoPath);
  attach_.assign(static_cast<size_t>(N) * P, kNoPath);
  npu_planes_.assign(N, 0);
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
  switch_paths_.assign(total, SwitchPath{});
  std::vector<uint32_t> parent_port, parent, dist, hops_rev;
  for (uint32_t p = 0; p < P; ++p) {
    const uint32_t S = plane_switches_[p];
    for (uint32_t a = 0; a < S; ++a) {
      parent_port.assign(S, kNoPath);
      parent.assign(S, kNoPath);
      dist.assign(S, kNoPath);
      std::deque<uint32_t> frontier{a};
      dist[a] = 0;
      while (!frontier.empty()) {
        const uint32_t u = frontier.front();
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
  // Ports start as bundles of their own; detect_symmetry() groups them across planes.
  port_bundle_.resize(num_ports);
  port_lane_.assign(num_ports, 0);
  bundles_.resize(num_ports);
  for (const dev::LinkDesc& l : topo_.links)
    for (uint32_t dir = 0; dir < 2; ++dir) {
      const uint32_t port = 2 * l.id + dir;
      port_bundle_[port] = port;
      bundles_[port].ns_per_byte = 1.0 / l.bandwidth_gbps;
      bundles_[port].latency_ns = l.latency_ns;
    }
  // Non-blocking switch-to-switch ports: bandwidth >= what can enter its source switch
  // (other than back from its destination), or >= what can leave its destination switch
  // (other than back to its source).
  {
    const size_t V = N + topo_.switches.size();
    std::vector<double> attached_bw(V, 0);
    auto vertex = [&](const dev::Endpoint& e) {
      return e.kind == dev::EndpointKind::kNpu ? e.id : N + e.id;
    };
    for (const dev::LinkDesc& l : topo_.links) {
      attached_bw[vertex(l.a)] += l.bandwidth_gbps;
      attached_bw[vertex(l.b)] += l.bandwidth_gbps;
    }
    for (const dev::LinkDesc& l : topo_.links) {
      if (l.a.kind != dev::EndpointKind::kSwitch || l.b.kind != dev::EndpointKind::kSwitch)
        continue;
      for (uint32_t dir = 0; dir < 2; ++dir) {
        const uint32_t from = vertex(dir == 0 ? l.a : l.b), to = vertex(dir == 0 ? l.b : l.a);
        const double feeders = attached_bw[from] - l.bandwidth_gbps;
        const double drains = attached_bw[to] - l.bandwidth_gbps;
        const double cap = l.bandwidth_gbps * (1 + 1e-9);
        bundles_[2 * l.id + dir].nonblocking = cap >= feeders || cap >= drains;
      }
    }
  }
  detect_symmetry();
  const size_t stride = symmetric_ ? num_planes_ : 1;
  lane_period_.assign(bundles_.size() * stride, Period{});
  lane_bytes_.assign(bundles_.size() * stride, 0);
  lane_packets_.assign(bundles_.size() * stride, 0);
  lane_lost_.assign(bundles_.size() * stride, 0);
  lane_corrupted_.assign(bundles_.size() * stride, 0);
  rotation_.assign(N, 0);
  return ok_status();
}

// Groups the ports at the same position on every plane into bundles, when every plane has
// the same shape: every NPU on every plane, switches matching by (level, node) at the same
// index, equal links, and the same switch paths. Otherwise ports stay single-lane bundles.
void FabricModel::detect_symmetry() {
  const uint32_t P = num_planes_;
  const uint32_t N = topo_.num_npus();
  symmetric_ = false;
  if (P < 2) return;
  for (uint32_t n = 0; n < N; ++n)
    if (npu_planes_[n] != all_planes_) return;
  for (uint32_t p = 1; p < P; ++p)
    if (plane_switches_[p] != plane_switches_[0]) return;
  // Switch signature by (plane, local index).
  std::vector<std::vector<std::pair<int, uint32_t>>> signature(P);
  for (const dev::SwitchDesc& sw : topo_.switches)
    signature[sw.plane].push_back({static_cast<int>(sw.level), sw.node});
  for (uint32_t p = 1; p < P; ++p)
    if (signature[p] != signature[0]) return;
  // Local index of each switch again (its order within its plane).
  std::vector<uint32_t> local(topo_.switches.size());
  std::vector<uint32_t> count(P, 0);
  for (const dev::SwitchDesc& sw : topo_.switches) local[sw.id] = count[sw.plane]++;
  // Bundle key of a port: (kind, a, b): NPU up (0, npu), NPU down (1, npu), switch (2, from, to).
  std::map<std::tuple<int, uint32_t, uint32_t>, uint32_t> bundle_of_key;
  std::vector<uint32_t> bundle(port_bundle_.size(), kNoPath), lane(port_bundle_.size(), 0);
  std::vector<uint32_t> lanes_seen;  // per bundle: mask of planes
  std::vector<uint32_t> first_port;
  for (const dev::LinkDesc& l : topo_.links) {
    for (uint32_t dir = 0; dir < 2; ++dir) {
      const dev::Endpoint& from = dir == 0 ? l.a : l.b;
      const dev::Endpoint& to = dir == 0 ? l.b : l.a;
      std::tuple<int, uint32_t, uint32_t> key;
      if (from.kind == dev::EndpointKind::kNpu) key = {0, from.id, 0};
      else if (to.kind == dev::EndpointKind::kNpu) key = {1, to.id, 0};
      else key = {2, local[from.id], local[to.id]};
      auto [it, fresh] = bundle_of_key.emplace(key, static_cast<uint32_t>(lanes_seen.size()));
      if (fresh) {
        lanes_seen.push_back(0);
        first_port.push_back(2 * l.id + dir);
      }
      const uint32_t b = it->second;
      if (lanes_seen[b] & (1u << l.plane)) return;  // two ports of one bundle on one plane
      lanes_seen[b] |= 1u << l.plane;
      const Bundle& ref = bundles_[first_port[b]];
      const Bundle& mine = bundles_[2 * l.id + dir];
      if (ref.ns_per_byte != mine.ns_per_byte || ref.latency_ns != mine.latency_ns ||
          ref.nonblocking != mine.nonblocking)
        return;
      bundle[2 * l.id + dir] = b;
      lane[2 * l.id + dir] = l.plane;
    }
  }
  for (uint32_t seen : lanes_seen)
    if (seen != all_planes_) return;
  // Same switch paths, bundle by bundle, on every plane.
  const uint32_t S = plane_switches_[0];
  for (uint32_t a = 0; a < S; ++a)
    for (uint32_t b = 0; b < S; ++b) {
      const SwitchPath& ref = switch_paths_[plane_path_base_[0] + a * S + b];
      for (uint32_t p = 1; p < P; ++p) {
        const SwitchPath& sp = switch_paths_[plane_path_base_[p] + a * S + b];
        if (sp.hops != ref.hops) return;
        if (sp.hops == kNoPath) continue;
        for (uint32_t h = 0; h < sp.hops; ++h)
          if (bundle[path_ports_[sp.offset + h]] != bundle[path_ports_[ref.offset + h]]) return;
      }
    }
  for (uint32_t n = 0; n < N; ++n)
    for (uint32_t p = 1; p < P; ++p)
      if (attach_[static_cast<size_t>(n) * P + p] != attach_[static_cast<size_t>(n) * P]) return;
  // Symmetric: rebuild the bundle table.
  std::vector<Bundle> grouped(lanes_seen.size());
  for (size_t b = 0; b < grouped.size(); ++b) {
    grouped[b] = bundles_[first_port[b]];
    grouped[b].uniform = 1;
  }
  bundles_ = std::move(grouped);
  port_bundle_ = bundle;
  port_lane_ = lane;
  up_bundle_.resize(N);
  down_bundle_.resize(N);
  attach0_.resize(N);
  for (uint32_t n = 0; n < N; ++n) {
    attach0_[n] = attach_[static_cast<size_t>(n) * P];
    up_bundle_[n] = port_bundle_[up_port_[static_cast<size_t>(n) * P]];
    down_bundle_[n] = port_bundle_[down_port_[static_cast<size_t>(n) * P]];
  }
  path_bundles_.resize(path_ports_.size());
  for (size_t i = 0; i < path_ports_.size(); ++i) path_bundles_[i] = port_bundle_[path_ports_[i]];
  // Switch hops at least as fast as every NPU link never stretch a flow's tail.
  double fastest_npu_ns_per_byte = bundles_[up_bundle_[0]].ns_per_byte;
  for (uint32_t n = 0; n < N; ++n)
    fastest_npu_ns_per_byte = std::min({fastest_npu_ns_per_byte,
                                        bundles_[up_bundle_[n]].ns_per_byte,
                                        bundles_[down_bundle_[n]].ns_per_byte});
  pair_paths_.assign(static_cast<size_t>(S) * S, PairPath{});
  pairs_through_bundle_.assign(bundles_.size(), {});
  for (uint32_t a = 0; a < S; ++a)
    for (uint32_t b = 0; b < S; ++b) {
      const SwitchPath& sp = switch_paths_[a * S + b];
      PairPath& pp = pair_paths_[a * S + b];
      if (sp.hops == kNoPath || sp.hops == 0) continue;
      pp.pure = 1;
      for (uint32_t h = 0; h < sp.hops; ++h) {
        const uint32_t bi = path_bundles_[sp.offset + h];
        pp.mid_latency_ns += bundles_[bi].latency_ns;
        if (!bundles_[bi].nonblocking || bundles_[bi].ns_per_byte > fastest_npu_ns_per_byte)
          pp.pure = 0;
      }
      if (pp.pure)
        for (uint32_t h = 0; h < sp.hops; ++h)
          pairs_through_bundle_[path_bundles_[sp.offset + h]].push_back(a * S + b);
    }
  symmetric_ = true;
}

double FabricModel::serve_in_gaps(Period& p, double arrive, double dur, double* start) {
  // Precondition: arrive < p.tail. The head [start, tail) holds the work not in the final
  // block, its idle time assumed spread evenly.
  const double head = p.tail - p.start;
  const double idle = std::max(0.0, head - (p.work - (p.until - p.tail)));
  const double before = std::max(0.0, p.start - arrive);  // wholly idle, before the period
  const double from = std::max(arrive, p.start);
  const double rest = dur - before;     // what the idle time before cannot take
  const double after = p.tail - from;   // the part of the head after the arrival
  double finish;
  if (rest <= 0) {
    finish = arrive + dur;
  } else if (rest * head <= idle * after) {
    // Fits the head's gaps after the arrival, served at the rate the head leaves idle.
    finish = std::min(p.tail, from + rest * head / idle);
  } else {
    finish = p.until + (rest - (head > 0 ? idle * after / head : 0.0));
  }
  *start = before > 0 || idle > 0 ? arrive : p.until;
  p.until = std::max(p.until, finish);
  p.start = std::min(p.start, arrive);
  p.work += dur;
  return finish;
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
    for (uint32_t h = 0; h < r.hops; ++h) lat += bundles_[port_bundle_[r.ports[h]]].latency_ns;
    return lat;
  }
  return 0;
}

bool FabricModel::route_down_at(const Route& r, double t, const FaultTable& faults) const {
  for (uint32_t h = 0; h < r.hops; ++h)
    if (faults.link_down_at(r.ports[h] / 2) <= t) return true;
  return false;
}

PortCounters FabricModel::port_counters(uint32_t port) const {
  const size_t stride = symmetric_ ? num_planes_ : 1;
  const size_t i = port_bundle_[port] * stride + port_lane_[port];
  const Bundle& b = bundles_[port_bundle_[port]];
  uint64_t bytes = lane_bytes_[i] + b.all_lanes_bytes;
  uint64_t packets = lane_packets_[i] + b.all_lanes_packets;
  if (symmetric_)
    for (uint32_t pair : pairs_through_bundle_[port_bundle_[port]]) {
      bytes += pair_paths_[pair].bytes;
      packets += pair_paths_[pair].packets;
    }
  return PortCounters{bytes, packets, lane_lost_[i], lane_corrupted_[i],
                      static_cast<double>(bytes) * b.ns_per_byte};
}

FabricModel::Period& FabricModel::lane_period(uint32_t port) {
  const uint32_t b = port_bundle_[port];
  Bundle& bundle = bundles_[b];
  if (!symmetric_) return lane_period_[b];
  Period* lanes = &lane_period_[static_cast<size_t>(b) * num_planes_];
  if (bundle.uniform) {  // split the common state into per-plane states
    for (uint32_t p = 0; p < num_planes_; ++p) lanes[p] = bundle.shared;
    bundle.uniform = 0;
  }
  return lanes[port_lane_[port]];
}

double FabricModel::run_flow(const Route& r, double ready, uint64_t wire_bytes, uint32_t n,
                             double* hop_start) {
  const double w = static_cast<double>(wire_bytes);
  const size_t stride = symmetric_ ? num_planes_ : 1;
  double start = ready, tail = ready, lat = 0;
  for (uint32_t h = 0; h < r.hops; ++h) {
    const uint32_t port = r.ports[h];
    const Bundle& b = bundles_[port_bundle_[port]];
    const double dur = w * b.ns_per_byte;
    const double arrive = start + lat;
    double finish;
    if (b.nonblocking) {
      start = arrive;
      finish = arrive + dur;
    } else {
      finish = serve(lane_period(port), arrive, dur, &start);
    }
    tail = h == 0 ? finish : std::max(finish, tail + lat);
    const size_t i = port_bundle_[port] * stride + port_lane_[port];
    lane_bytes_[i] += wire_bytes;
    lane_packets_[i] += n;
    if (hop_start != nullptr) hop_start[h] = start;
    lat = b.latency_ns;
  }
  return tail + lat;
}

double FabricModel::run_striped(dev::NpuId src, dev::NpuId dst, double ready,
                                const Stripe& st) {
  const uint32_t P = num_planes_;
  // The common state advances by the average plane's share; the flow ends with its most
  // loaded plane (at most one packet more).
  const double avg = static_cast<double>(st.total_wire) * inv_planes_;
  // The most loaded plane: one with an extra packet, unless the only one also carries the
  // short last packet.
  const double max_lane = static_cast<double>(
      st.num_extra == 0   ? st.base_bytes
      : st.num_extra == 1 ? st.base_bytes + st.packet_wire - st.short_bytes
                          : st.base_bytes + st.packet_wire);
  const double extra = std::max(0.0, max_lane - avg);
  const uint32_t S = plane_switches_[0];
  const uint32_t pair = attach0_[src] * S + attach0_[dst];
  const SwitchPath& sp = switch_paths_[pair];
  PairPath& pp = pair_paths_[pair];
  const uint32_t hops = sp.hops + 2;
  const bool lanes_differ = st.num_extra > 0 || st.short_bytes > 0;
  double start = ready, tail = ready, lat = 0, extra_ns = 0;
  for (uint32_t h = 0; h < hops; ++h) {
    const uint32_t bi = h == 0          ? up_bundle_[src]
                        : h == hops - 1 ? down_bundle_[dst]
                                        : path_bundles_[sp.offset + h - 1];
    Bundle& b = bundles_[bi];
    if (h == 1 && pp.pure) {
      // Switch hops that only add latency: one step over all of them, traffic counted on
      // the pair (their bundles read it from there).
      pp.bytes += st.base_bytes;
      pp.packets += st.base_packets;
      if (lanes_differ)
        for (uint32_t m = 1; m < hops - 1; ++m) {
          const size_t mb = static_cast<size_t>(path_bundles_[sp.offset + m - 1]) * P;
          for (uint32_t e = 0; e < st.num_extra; ++e) {
            lane_bytes_[mb + st.extra_lanes[e]] += st.packet_wire;
            lane_packets_[mb + st.extra_lanes[e]] += 1;
          }
          lane_bytes_[mb + st.short_lane] -= st.short_bytes;
        }
      // Leaving the last switch hop: start and tail both moved by every latency so far.
      const double last_lat = bundles_[path_bundles_[sp.offset + sp.hops - 1]].latency_ns;
      start += lat + pp.mid_latency_ns - last_lat;
      tail += lat + pp.mid_latency_ns - last_lat;
      lat = last_lat;
      h = hops - 2;
      continue;
    }
    if (lanes_differ) {
      uint64_t* bytes = &lane_bytes_[static_cast<size_t>(bi) * P];
      uint64_t* packets = &lane_packets_[static_cast<size_t>(bi) * P];
      for (uint32_t e = 0; e < st.num_extra; ++e) {
        bytes[st.extra_lanes[e]] += st.packet_wire;
        packets[st.extra_lanes[e]] += 1;
      }
      bytes[st.short_lane] -= st.short_bytes;
    }
    b.all_lanes_bytes += st.base_bytes;
    b.all_lanes_packets += st.base_packets;
    const double dur = avg * b.ns_per_byte;
    const double arrive = start + lat;
    double finish;
    if (b.nonblocking) {
      start = arrive;
      finish = arrive + dur;
    } else if (b.uniform) {
      finish = serve(b.shared, arrive, dur, &start);
    } else {
      Period* lanes = &lane_period_[static_cast<size_t>(bi) * P];
      double busy_until = 0;
      for (uint32_t p = 0; p < P; ++p) busy_until = std::max(busy_until, lanes[p].until);
      if (arrive >= busy_until) {  // every plane idle: merge back into one state
        b.uniform = 1;
        b.shared = Period{};
        finish = serve(b.shared, arrive, dur, &start);
      } else {
        start = 0;
        finish = 0;
        for (uint32_t p = 0; p < P; ++p) {
          uint64_t lane_wire = st.base_bytes - (p == st.short_lane ? st.short_bytes : 0);
          for (uint32_t e = 0; e < st.num_extra; ++e)
            if (st.extra_lanes[e] == p) lane_wire += st.packet_wire;
          double s = 0;
          const double f =
              serve(lanes[p], arrive, static_cast<double>(lane_wire) * b.ns_per_byte, &s);
          start = std::max(start, s);
          finish = std::max(finish, f);
        }
      }
    }
    extra_ns = std::max(extra_ns, extra * b.ns_per_byte);
    tail = h == 0 ? finish : std::max(finish, tail + lat);
    lat = b.latency_ns;
  }
  return tail + lat + extra_ns;
}

void FabricModel::flow_fates(const Route& r, dev::PlaneId plane, const double* hop_start,
                             uint64_t wire_bytes, uint32_t n, uint32_t first_packet,
                             uint32_t stride, uint32_t queue, uint64_t seq, FaultTable& faults,
                             TransferOutcome* out, std::vector<uint32_t>* undelivered) {
  const double packet_wire = static_cast<double>(wire_bytes) / n;
  const size_t lane_stride = symmetric_ ? num_planes_ : 1;
  double packet_ns[kMaxHops], link_at[kMaxHops];
  size_t lane_index[kMaxHops];
  for (uint32_t h = 0; h < r.hops; ++h) {
    packet_ns[h] = packet_wire * bundles_[port_bundle_[r.ports[h]]].ns_per_byte;
    link_at[h] = faults.link_down_at(r.ports[h] / 2);
    lane_index[h] = port_bundle_[r.ports[h]] * lane_stride + port_lane_[r.ports[h]];
  }
  const double plane_at = faults.plane_down_at(plane);
  const std::vector<PacketFault>& pf = faults.packet_faults();
  // For each packet fault, the hop it applies to on this route (-1: not on it; -2: every
  // link, the hop drawn per packet).
  int fault_hop[32];
  const size_t nf = std::min<size_t>(pf.size(), 32);
  for (size_t f = 0; f < nf; ++f) {
    fault_hop[f] = -1;
    if (pf[f].link == dev::kInvalidId) {
      fault_hop[f] = -2;
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
        const double pick = faults.draw(pf[f].id, queue, seq ^ (1ull << 63), g);
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
      ++lane_corrupted_[lane_index[corrupt_hop]];
      ++faults.counters.packets_corrupted;
      continue;
    }
    ++out->packets_lost;
    ++lane_lost_[lane_index[lost_hop]];
    for (uint32_t h = static_cast<uint32_t>(lost_hop) + 1; h < r.hops; ++h) {
      lane_packets_[lane_index[h]] -= 1;
      lane_bytes_[lane_index[h]] -= per_packet_bytes;
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
  const uint64_t short_bytes = packets * pb - q.bytes;
  const bool faulty = faults.any_path_fault();
  const uint32_t usable = q.plane_mask & all_planes_ & npu_planes_[q.src] & npu_planes_[q.dst];

  // Fast path: striped over every plane of a symmetric topology, no faults.
  if (symmetric_ && !faulty && usable == all_planes_ && packets >= num_planes_ &&
      q.extra_wire_bytes == 0) {
    const uint32_t k = num_planes_;
    // rotation_ is kept below k, so no 64-bit division is needed here.
    const uint32_t start = static_cast<uint32_t>(rotation_[q.src]);
    Stripe st;
    st.base_packets = packets / k;
    uint64_t next = start + (packets - st.base_packets * k);
    rotation_[q.src] = next >= k ? next - k : next;
    st.packet_wire = pb + header;
    st.base_bytes = st.base_packets * st.packet_wire;
    const uint32_t extra = static_cast<uint32_t>(packets - st.base_packets * k);
    // Slot j (packets j, j+k, ...) travels on plane (start + j) mod k.
    uint32_t plane = start;
    for (uint32_t j = 0; j < extra; ++j) {
      st.extra_lanes[j] = plane;
      plane = plane + 1 == k ? 0 : plane + 1;
    }
    st.num_extra = extra;
    const uint32_t last_slot = extra == 0 ? k - 1 : extra - 1;
    st.short_lane = start + last_slot >= k ? start + last_slot - k : start + last_slot;
    st.short_bytes = short_bytes;
    st.total_wire = q.bytes + packets * header;
    out->packets = static_cast<uint32_t>(packets);
    out->planes_used = all_planes_;
    // The most common shape, straight-line: every plane alike, both NPU bundles in one
    // state, switch hops that only add latency.
    const uint32_t pair = attach0_[q.src] * plane_switches_[0] + attach0_[q.dst];
    PairPath& pp = pair_paths_[pair];
    Bundle& up = bundles_[up_bundle_[q.src]];
    Bundle& down = bundles_[down_bundle_[q.dst]];
    if (extra == 0 && short_bytes == 0 && up.uniform && down.uniform && !up.nonblocking &&
        !down.nonblocking && (pp.pure || switch_paths_[pair].hops == 0)) {
      const double avg = static_cast<double>(st.total_wire) * inv_planes_;
      double up_start = 0, down_start = 0;
      const double up_end = serve(up.shared, q.ready_ns, avg * up.ns_per_byte, &up_start);
      up.all_lanes_bytes += st.base_bytes;
      up.all_lanes_packets += st.base_packets;
      pp.bytes += st.base_bytes;  // a no-op pair for paths without switch hops
      pp.packets += st.base_packets;
      const double to_down = up.latency_ns + pp.mid_latency_ns;
      const double down_end =
          serve(down.shared, up_start + to_down, avg * down.ns_per_byte, &down_start);
      down.all_lanes_bytes += st.base_bytes;
      down.all_lanes_packets += st.base_packets;
      out->end_ns = std::max(down_end, up_end + to_down) + down.latency_ns;
      now_ns_ = std::max(now_ns_, out->end_ns);
      return;
    }
    out->end_ns = run_striped(q.src, q.dst, q.ready_ns, st);
    now_ns_ = std::max(now_ns_, out->end_ns);
    return;
  }

  Route routes[dev::kMaxPlanes];
  dev::PlaneId plane_of[dev::kMaxPlanes];
  uint32_t k = 0;
  bool plane_down = false, link_down = false;
  for (uint32_t rest = usable; rest != 0; rest &= rest - 1) {
    const dev::PlaneId p = static_cast<dev::PlaneId>(std::countr_zero(rest));
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
  rotation_[q.src] = (rotation_[q.src] + packets) % num_planes_;
  const uint64_t used = std::min<uint64_t>(k, packets);
  const uint64_t base = packets / k, extra = packets % k, last_slot = (packets - 1) % k;
  double end = q.ready_ns;
  uint64_t extra_left = q.extra_wire_bytes;
  for (uint64_t j = 0; j < used; ++j) {
    const uint64_t idx = (start + j) % k;
    const uint64_t n = base + (j < extra ? 1 : 0);
    const uint64_t sub_headers = j + 1 == used ? extra_left : q.extra_wire_bytes * n / packets;
    extra_left -= sub_headers;
    const uint64_t wire = n * (pb + header) - (j == last_slot ? short_bytes : 0) + sub_headers;
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
  const double arrive = run_flow(request, ready_ns, wire, 1, hop_start);
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
