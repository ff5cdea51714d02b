// The link check and the all-to-all.
//
// Two rounds of point-to-point traffic: each NPU sends to the next NPU of its node, then to
// the NPU at the same index in the next node. Each round is a permutation, so every
// destination link receives from exactly one source per plane and nothing contends: a
// one-packet transfer on plane p shows the route's latency, a large one the link's
// bandwidth. Everything is timing mode on one fabric queue per NPU, submitted for all NPUs
// before any doorbell, so cm384 (2 x 384 x 7 x 2 transfers) takes milliseconds.
//
// Blame: a failed transfer is pinned to a lost NPU at either end, else to its plane when
// the plane is down, else to the links of its route that are down; only when none of these
// explains it is the sending link blamed with the completion status. Afterwards every
// plane and link state is read, so a fault that no transfer happened to cross is reported
// too.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "runtime/base/strformat.h"
#include "tools/lib/bringup/bringup.h"
#include "tools/lib/smoke/fabric_smoke.h"

namespace moe::tools::bringup {
namespace {

struct Route {
  std::vector<dev::LinkId> links;  // in order, source NPU link first
  double latency_ns = 0;
  double min_gbps = 0;
  bool ok = false;
};

// Shortest switch paths per plane (BFS over switch-to-switch links), cached per pair.
class Router {
 public:
  explicit Router(const dev::Topology& t) : t_(t), adj_(t.switches.size()) {
    for (const dev::LinkDesc& l : t.links)
      if (l.a.kind == dev::EndpointKind::kSwitch && l.b.kind == dev::EndpointKind::kSwitch) {
        adj_[l.a.id].push_back({l.b.id, l.id});
        adj_[l.b.id].push_back({l.a.id, l.id});
      }
  }
  Route route(dev::NpuId src, dev::NpuId dst, dev::PlaneId plane) {
    Route r;
    dev::LinkId ls = t_.link_of(src, plane), ld = t_.link_of(dst, plane);
    if (ls == dev::kInvalidId || ld == dev::kInvalidId) return r;
    uint32_t ss = switch_of(ls), sd = switch_of(ld);
    r.links.push_back(ls);
    const std::vector<dev::LinkId>* mid = path(ss, sd);
    if (!mid) return r;
    r.links.insert(r.links.end(), mid->begin(), mid->end());
    r.links.push_back(ld);
    r.min_gbps = 1e300;
    for (dev::LinkId l : r.links) {
      r.latency_ns += t_.links[l].latency_ns;
      r.min_gbps = std::min(r.min_gbps, t_.links[l].bandwidth_gbps);
    }
    r.ok = true;
    return r;
  }

 private:
  uint32_t switch_of(dev::LinkId l) const {
    const dev::LinkDesc& d = t_.links[l];
    return d.a.kind == dev::EndpointKind::kSwitch ? d.a.id : d.b.id;
  }
  const std::vector<dev::LinkId>* path(uint32_t from, uint32_t to) {
    auto key = std::make_pair(from, to);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second.ok ? &it->second.links : nullptr;
    Path p;
    std::vector<std::pair<uint32_t, dev::LinkId>> prev(adj_.size(), {dev::kInvalidId, dev::kInvalidId});
    std::vector<uint32_t> frontier{from};
    std::vector<bool> seen(adj_.size(), false);
    seen[from] = true;
    for (size_t i = 0; i < frontier.size() && !seen[to]; ++i)
      for (auto [next, link] : adj_[frontier[i]])
        if (!seen[next]) {
          seen[next] = true;
          prev[next] = {frontier[i], link};
          frontier.push_back(next);
        }
    if (seen[to]) {
      p.ok = true;
      for (uint32_t s = to; s != from; s = prev[s].first) p.links.push_back(prev[s].second);
      std::reverse(p.links.begin(), p.links.end());
    }
    auto& slot = cache_[key] = std::move(p);
    return slot.ok ? &slot.links : nullptr;
  }
  struct Path {
    bool ok = false;
    std::vector<dev::LinkId> links;
  };
  const dev::Topology& t_;
  std::vector<std::vector<std::pair<uint32_t, dev::LinkId>>> adj_;
  std::map<std::pair<uint32_t, uint32_t>, Path> cache_;
};

// What is known about one link after the rounds.
struct LinkResult {
  uint32_t measurements = 0;
  double worst_latency_ratio = 1;  // measured / expected, furthest from 1
  double latency_ns = 0, latency_expected_ns = 0;
  double worst_bw_ratio = 1;
  double gbps = 0, gbps_expected = 0;
  std::string problem;  // unexplained failure of a transfer it sent
};

bool further(double ratio, double than) { return std::fabs(ratio - 1) > std::fabs(than - 1); }

class Blamer {
 public:
  Blamer(dev::Driver& d) : d_(d) {}
  bool npu_lost(dev::NpuId n) {
    dev::NpuState s;
    return d_.npu_state(n, &s).ok() ? s.lost : true;
  }
  bool plane_down(dev::PlaneId p) {
    dev::PlaneState s;
    return d_.plane_state(p, &s).ok() && s.health == dev::LinkHealth::kDown;
  }
  bool link_down(dev::LinkId l) {
    dev::LinkState s;
    return d_.link_state(l, &s).ok() && s.health == dev::LinkHealth::kDown;
  }
  // Records who is to blame for a failure between src and dst on `plane`; false when no
  // fault explains it.
  bool blame(dev::NpuId src, dev::NpuId dst, dev::PlaneId plane, const Route& r, StatusCode status) {
    bool found = false;
    if (status == StatusCode::kHbmError) {  // the source's HBM could not be read
      hbm_npus.insert(src);
      return true;
    }
    for (dev::NpuId n : {src, dst})
      if (npu_lost(n)) lost_npus.insert(n), found = true;
    if (found) return true;
    if (plane_down(plane)) {
      down_planes.insert(plane);
      return true;
    }
    for (dev::LinkId l : r.links)
      if (link_down(l)) down_links.insert(l), found = true;
    return found;
  }
  std::set<dev::NpuId> lost_npus;
  std::set<dev::PlaneId> down_planes;
  std::set<dev::LinkId> down_links;
  std::set<dev::NpuId> hbm_npus;

 private:
  dev::Driver& d_;
};

}  // namespace

void check_links(dev::Driver& driver, const CheckOptions& options, BringupReport* report) {
  const dev::Topology& t = driver.topology();
  const uint32_t n = t.num_npus(), planes = t.num_planes;
  const uint64_t small = options.link_small_bytes ? options.link_small_bytes : t.packet_bytes;
  const uint64_t large = options.link_large_bytes;
  const double payload_share = static_cast<double>(t.packet_bytes) / (t.packet_bytes + t.packet_header_bytes);
  const double tol = options.tolerance;
  Router router(t);
  Blamer blamer(driver);
  std::vector<LinkResult> results(t.links.size());

  std::vector<dev::QueueId> queues(n);
  for (dev::NpuId i = 0; i < n; ++i) {
    Status st = driver.queue_create(i, 0, dev::EngineKind::kFabric, 0, &queues[i]);
    if (!st.ok()) {
      if (blamer.npu_lost(i)) {
        blamer.lost_npus.insert(i);
      } else {
        CheckEntry e;
        e.check = "npu";
        e.npu = i;
        e.node = t.npus[i].node;
        e.message = describe_npu(t, i) + ": no fabric queue: " + st.to_string();
        report->entries.push_back(e);
      }
    }
  }

  struct RoundSpec {
    const char* name;
    bool cross_node;
  };
  std::vector<RoundSpec> rounds;
  rounds.push_back({"same-node", false});
  if (t.num_nodes > 1) rounds.push_back({"cross-node", true});
  // Each round starts when the previous one has finished everywhere, so its probes find
  // idle ports.
  ModelTime round_start{};
  for (const RoundSpec& round : rounds) {
    ModelTime round_end = round_start;
    if (options.progress)
      options.progress(strformat("links: %s round, %u NPUs x %u planes", round.name, n, planes));
    std::vector<dev::NpuId> peer(n, dev::kInvalidId);
    for (dev::NpuId i = 0; i < n; ++i) {
      const dev::NpuDesc& d = t.npus[i];
      if (!round.cross_node) {
        const auto& mates = t.npus_of_node[d.node];
        if (mates.size() > 1) peer[i] = mates[(d.index_in_node + 1) % mates.size()];
      } else {
        const auto& mates = t.npus_of_node[(d.node + 1) % t.num_nodes];
        if (!mates.empty()) peer[i] = mates[d.index_in_node % mates.size()];
      }
    }
    std::vector<size_t> submitted(n, 0);
    for (dev::NpuId i = 0; i < n; ++i) {
      if (!queues[i].valid() || peer[i] == dev::kInvalidId) continue;
      std::vector<dev::WorkDescriptor> work;
      for (int kind = 0; kind < 2; ++kind)
        for (dev::PlaneId p = 0; p < planes; ++p) {
          if (t.link_of(i, p) == dev::kInvalidId) continue;
          dev::WorkDescriptor w;
          w.kind = dev::WorkKind::kTransfer;
          w.tag = (static_cast<uint64_t>(kind) << 32) | p;
          w.not_before = round_start;
          w.transfer.src = dev::DevicePtr{i, 0};
          w.transfer.dst = dev::DevicePtr{peer[i], 0};
          w.transfer.bytes = kind == 0 ? small : large;
          w.transfer.plane_mask = 1u << p;
          w.transfer.move_payload = false;
          work.push_back(w);
        }
      Status st = driver.queue_submit(queues[i], work.data(), work.size());
      if (!st.ok()) {
        CheckEntry e;
        e.check = "npu";
        e.npu = i;
        e.node = t.npus[i].node;
        e.message = describe_npu(t, i) + ": submitting link probes failed: " + st.to_string();
        report->entries.push_back(e);
        continue;
      }
      submitted[i] = work.size();
    }
    for (dev::NpuId i = 0; i < n; ++i)
      if (submitted[i]) driver.doorbell_ring(queues[i]).ignore();
    std::vector<dev::Completion> buf(64);
    for (dev::NpuId i = 0; i < n; ++i) {
      size_t seen = 0;
      while (seen < submitted[i]) {
        size_t got = 0;
        Status st = driver.completions_poll(queues[i], buf.data(), buf.size(), &got);
        if (st.ok() && got == 0) st = driver.completions_wait(queues[i], 5'000'000'000LL);
        if (!st.ok()) {
          CheckEntry e;
          e.check = "npu";
          e.npu = i;
          e.node = t.npus[i].node;
          e.message = describe_npu(t, i) + ": waiting for link probes: " + st.to_string();
          report->entries.push_back(e);
          break;
        }
        for (size_t k = 0; k < got; ++k) {
          const dev::Completion& c = buf[k];
          round_end = max(round_end, c.end);
          const bool is_large = (c.tag >> 32) != 0;
          const dev::PlaneId p = static_cast<dev::PlaneId>(c.tag & 0xffffffffu);
          Route r = router.route(i, peer[i], p);
          LinkResult& lr = results[t.link_of(i, p)];
          if (c.status != StatusCode::kOk || c.packets_lost || c.packets_corrupted) {
            if (!blamer.blame(i, peer[i], p, r, c.status) && lr.problem.empty())
              lr.problem = strformat("%s transfer to %s on plane %u: %s, %u packets lost, %u corrupted",
                                     is_large ? "large" : "small", describe_npu(t, peer[i]).c_str(), p,
                                     std::string(status_code_name(c.status)).c_str(), c.packets_lost, c.packets_corrupted);
            continue;
          }
          if (!r.ok) continue;
          const double dur = (c.end - c.start).ns;
          ++lr.measurements;
          if (!is_large) {
            double wire = std::ceil(static_cast<double>(small) / t.packet_bytes) *
                          (t.packet_bytes + t.packet_header_bytes);
            double expected = r.latency_ns + wire / r.min_gbps;
            double ratio = dur / expected;
            if (lr.latency_expected_ns == 0 || further(ratio, lr.worst_latency_ratio)) {
              lr.worst_latency_ratio = ratio;
              lr.latency_ns = dur;
              lr.latency_expected_ns = expected;
            }
          } else {
            double expected = r.min_gbps * payload_share;
            double gbps = dur > r.latency_ns ? large / (dur - r.latency_ns) : 0;
            double ratio = gbps / expected;
            if (lr.gbps_expected == 0 || further(ratio, lr.worst_bw_ratio)) {
              lr.worst_bw_ratio = ratio;
              lr.gbps = gbps;
              lr.gbps_expected = expected;
            }
          }
        }
        seen += got;
      }
    }
    round_start = round_end;
  }
  for (dev::QueueId q : queues)
    if (q.valid()) driver.queue_destroy(q).ignore();

  // Faults no transfer crossed.
  for (dev::PlaneId p = 0; p < planes; ++p)
    if (blamer.plane_down(p)) blamer.down_planes.insert(p);
  for (dev::LinkId l = 0; l < t.links.size(); ++l)
    if (!blamer.down_planes.count(t.links[l].plane) && blamer.link_down(l)) blamer.down_links.insert(l);
  for (dev::NpuId i = 0; i < n; ++i)
    if (blamer.npu_lost(i)) blamer.lost_npus.insert(i);

  for (dev::NpuId i : blamer.lost_npus) {
    CheckEntry e;
    e.check = "npu";
    e.npu = i;
    e.node = t.npus[i].node;
    e.message = describe_npu(t, i) + ": lost (unreachable on every plane)";
    report->entries.push_back(e);
  }
  for (dev::NpuId i : blamer.hbm_npus) {
    if (blamer.lost_npus.count(i)) continue;
    CheckEntry e;
    e.check = "npu";
    e.npu = i;
    e.node = t.npus[i].node;
    e.message = describe_npu(t, i) + ": HBM error: its transfers could not read their source";
    report->entries.push_back(e);
  }
  for (dev::PlaneId p = 0; p < planes; ++p) {
    CheckEntry e;
    e.check = "plane";
    e.plane = p;
    e.passed = !blamer.down_planes.count(p);
    e.message = strformat("plane %u %s", p, e.passed ? "up" : "down: every link of it is unusable");
    report->entries.push_back(e);
  }
  uint32_t done = 0;
  for (const dev::LinkDesc& l : t.links) {
    CheckEntry e;
    e.check = "link";
    e.link = l.id;
    e.plane = l.plane;
    const bool npu_link = l.a.kind == dev::EndpointKind::kNpu || l.b.kind == dev::EndpointKind::kNpu;
    if (npu_link) {
      e.npu = l.a.kind == dev::EndpointKind::kNpu ? l.a.id : l.b.id;
      e.node = t.npus[e.npu].node;
    } else {
      const dev::SwitchDesc& s = t.switches[l.a.id];
      e.node = s.node != dev::kInvalidId ? s.node : t.switches[l.b.id].node;
    }
    const LinkResult& lr = results[l.id];
    const std::string name = describe_link(t, l.id);
    if (blamer.down_planes.count(l.plane)) {
      e.message = name + ": down with its plane";
    } else if (blamer.down_links.count(l.id)) {
      e.message = name + ": down";
    } else if (npu_link && blamer.lost_npus.count(e.npu)) {
      e.message = name + ": not tested, its NPU is lost";
    } else if (!lr.problem.empty()) {
      e.message = name + ": " + lr.problem;
    } else if (npu_link && lr.latency_expected_ns > 0 && std::fabs(lr.worst_latency_ratio - 1) > tol) {
      e.measured = lr.latency_ns;
      e.expected = lr.latency_expected_ns;
      e.unit = "ns";
      e.message = name + strformat(": small-transfer latency off by more than %.0f%%", tol * 100);
    } else if (npu_link && lr.gbps_expected > 0 && std::fabs(lr.worst_bw_ratio - 1) > tol) {
      e.measured = lr.gbps;
      e.expected = lr.gbps_expected;
      e.unit = "GB/s";
      e.message = name + strformat(": bandwidth off by more than %.0f%%", tol * 100);
    } else {
      e.passed = true;
      if (npu_link && lr.gbps_expected > 0) {
        e.measured = lr.gbps;
        e.expected = lr.gbps_expected;
        e.unit = "GB/s";
        e.message = name + strformat(": up, latency %.0f ns (expected %.0f), %u probes",
                                     lr.latency_ns, lr.latency_expected_ns, lr.measurements);
      } else {
        e.message = name + (npu_link ? ": up, not measured (no healthy route to a peer)" : ": up");
      }
    }
    report->entries.push_back(e);
    if (options.progress && ++done == t.links.size())
      options.progress(strformat("links: %u links checked", done));
  }
}

void check_all_to_all(dev::Driver& driver, const CheckOptions& options, BringupReport* report) {
  const dev::Topology& t = driver.topology();
  if (options.progress) options.progress(strformat("all-to-all: %u NPUs", t.num_npus()));
  std::vector<dev::NpuId> lost;
  for (dev::NpuId i = 0; i < t.num_npus(); ++i) {
    dev::NpuState s;
    if (!driver.npu_state(i, &s).ok() || s.lost) lost.push_back(i);
  }
  if (!lost.empty()) {
    // The all-to-all needs every NPU; the lost ones are what is wrong, so name them.
    for (dev::NpuId i : lost) {
      CheckEntry e;
      e.check = "all-to-all";
      e.npu = i;
      e.node = t.npus[i].node;
      e.message = describe_npu(t, i) + " lost: all-to-all not run";
      report->entries.push_back(e);
    }
    return;
  }
  AllToAllResult r;
  Status st = timing_all_to_all(driver, options.all_to_all_bytes_per_pair, &r);
  CheckEntry e;
  e.check = "all-to-all";
  e.passed = st.ok();
  if (st.ok()) {
    e.measured = r.modelled_gbps_per_npu;
    e.unit = "GB/s";
    e.message = strformat("%u NPUs, %s per pair, %llu transfers, modelled makespan %.1f us, %.1f GB/s per NPU",
                          r.npus, format_bytes(static_cast<double>(r.bytes_per_pair)).c_str(),
                          static_cast<unsigned long long>(r.transfers), r.modelled_makespan.us(),
                          r.modelled_gbps_per_npu);
  } else {
    e.message = "all-to-all failed: " + st.to_string();
    // Name the NPU whose HBM failed, when one did.
    for (dev::NpuId i = 0; i < t.num_npus(); ++i) {
      dev::NpuState s;
      if (driver.npu_state(i, &s).ok() && s.hbm_errors > 0) {
        e.npu = i;
        e.node = t.npus[i].node;
        e.message = describe_npu(t, i) + " has HBM errors; " + e.message;
        break;
      }
    }
  }
  report->entries.push_back(e);
}

void run_device_checks(dev::Driver& driver, const CheckOptions& options, BringupReport* report) {
  report->supernode = driver.topology().name;
  check_hbm(driver, options, report);
  check_links(driver, options, report);
  check_all_to_all(driver, options, report);
}

}  // namespace moe::tools::bringup
