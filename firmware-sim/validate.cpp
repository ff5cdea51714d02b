// Validation of a supernode description (the rules are listed in validate.h).
//
// Design: three passes, each run only when the one before found nothing, because each relies
// on what the earlier ones proved.
//   1. every field on its own, and every reference by id (ids dense, endpoints exist, nodes
//      and planes in range, link kinds and planes agree);
//   2. per NPU and plane, exactly one link (needs the references of pass 1);
//   3. per plane, every NPU reaches every other: the switches are joined into components
//      by their switch-to-switch links (union-find; a component never spans two planes,
//      since pass 1 refused a link whose plane differs from a switch end's), and each NPU's
//      switch on a plane must be in the same component as NPU 0's.
// Complaints are collected (the first few kept verbatim, the rest counted), so a file with
// several mistakes is fixed in one round; each one starts with the field's path in the file.
#include "firmware-sim/validate.h"

#include <cmath>
#include <cstdarg>
#include <numeric>
#include <string>
#include <vector>

#include "runtime/base/strformat.h"

namespace moe::sim {
namespace {

using dev::Endpoint;
using dev::EndpointKind;
using dev::SwitchLevel;
using dev::Topology;

class Complaints {
 public:
  void add(const char* fmt, ...) MOE_PRINTF_LIKE(2, 3) {
    ++count_;
    if (kept_.size() >= kMaxReportedErrors) return;
    va_list args;
    va_start(args, fmt);
    kept_.push_back(vstrformat(fmt, args));
    va_end(args);
  }
  bool empty() const { return count_ == 0; }
  Status to_status() const {
    if (count_ == 0) return ok_status();
    std::string message;
    for (const std::string& k : kept_) message += (message.empty() ? "" : "; ") + k;
    if (count_ > kept_.size())
      message += strformat("; and %zu more problem(s)", count_ - kept_.size());
    return Status(StatusCode::kInvalidArgument, std::move(message));
  }

 private:
  std::vector<std::string> kept_;
  size_t count_ = 0;
};

bool positive_finite(double v) { return std::isfinite(v) && v > 0; }
bool nonnegative_finite(double v) { return std::isfinite(v) && v >= 0; }

void check_positive(Complaints& c, const char* path, double v) {
  if (!positive_finite(v)) c.add("%s: must be a finite number > 0 (got %g)", path, v);
}
void check_nonnegative(Complaints& c, const char* path, double v) {
  if (!nonnegative_finite(v)) c.add("%s: must be a finite number >= 0 (got %g)", path, v);
}
void check_fraction(Complaints& c, const char* path, double v) {
  if (!(std::isfinite(v) && v > 0 && v <= 1)) c.add("%s: must be in (0, 1] (got %g)", path, v);
}

// Complains unless entry `index` of list `list` has id `index`.
void check_dense_id(Complaints& c, const char* list, size_t index, uint32_t id) {
  if (id == index) return;
  if (id < index)
    c.add("%s[%zu].id: duplicate id %u (%s[%u] has it; ids are dense, so this one must be %zu)",
          list, index, id, list, id, index);
  else
    c.add("%s[%zu].id: %u out of order (ids are dense, so this one must be %zu)", list, index, id,
          index);
}

bool node_in_range(const Topology& t, uint32_t node) { return node < t.num_nodes; }

void check_scalars(const Topology& t, Complaints& c) {
  if (t.num_nodes < 1 || t.num_nodes > kMaxNodes)
    c.add("num_nodes: must be 1..%u (got %u)", kMaxNodes, t.num_nodes);
  if (t.num_planes < 1 || t.num_planes > dev::kMaxPlanes)
    c.add("num_planes: must be 1..%u (got %u)", dev::kMaxPlanes, t.num_planes);
  if (t.dies_per_npu < 1 || t.dies_per_npu > kMaxDiesPerNpu)
    c.add("dies_per_npu: must be 1..%u (got %u)", kMaxDiesPerNpu, t.dies_per_npu);
  if (t.packet_bytes < 1 || t.packet_bytes > kMaxPacketBytes)
    c.add("packet_bytes: must be 1..%u (got %u)", kMaxPacketBytes, t.packet_bytes);
  else if (t.packet_header_bytes >= t.packet_bytes)
    c.add("packet_header_bytes: must be < packet_bytes %u (got %u)", t.packet_bytes,
          t.packet_header_bytes);
  check_positive(c, "host_link_bandwidth_gbps", t.host_link_bandwidth_gbps);
  check_positive(c, "compute.bf16_tflops", t.compute.bf16_tflops);
  check_positive(c, "compute.int8_tops", t.compute.int8_tops);
  check_fraction(c, "compute.matmul_bandwidth_efficiency", t.compute.matmul_bandwidth_efficiency);
  check_fraction(c, "compute.matmul_compute_efficiency", t.compute.matmul_compute_efficiency);
  check_nonnegative(c, "compute.launch_ns", t.compute.launch_ns);
  if (t.hbm.capacity_bytes == 0) c.add("hbm.capacity_bytes: must be > 0 (got 0)");
  check_positive(c, "hbm.bandwidth_gbps", t.hbm.bandwidth_gbps);
}

void check_cpus(const Topology& t, Complaints& c) {
  for (size_t i = 0; i < t.cpus.size(); ++i) {
    const dev::CpuDesc& cpu = t.cpus[i];
    check_dense_id(c, "cpus", i, cpu.id);
    if (!node_in_range(t, cpu.node))
      c.add("cpus[%zu].node: %u >= num_nodes %u", i, cpu.node, t.num_nodes);
    if (cpu.cores == 0) c.add("cpus[%zu].cores: must be > 0 (got 0)", i);
  }
}

void check_npus(const Topology& t, Complaints& c) {
  if (t.npus.empty()) {
    c.add("npus: must list at least one NPU");
    return;
  }
  if (t.npus.size() > kMaxNpus) {
    c.add("npus: %zu NPUs, more than the %u supported", t.npus.size(), kMaxNpus);
    return;
  }
  // The index the next NPU of each node must have; only when num_nodes is sane.
  std::vector<uint32_t> next_index;
  if (t.num_nodes <= kMaxNodes) next_index.assign(t.num_nodes, 0);
  for (size_t i = 0; i < t.npus.size(); ++i) {
    const dev::NpuDesc& npu = t.npus[i];
    check_dense_id(c, "npus", i, npu.id);
    if (!node_in_range(t, npu.node)) {
      c.add("npus[%zu].node: %u >= num_nodes %u", i, npu.node, t.num_nodes);
    } else if (npu.node < next_index.size()) {
      uint32_t expected = next_index[npu.node]++;
      if (npu.index_in_node != expected)
        c.add("npus[%zu].index_in_node: expected %u (a node's NPUs count 0, 1, 2, ... in id "
              "order), got %u",
              i, expected, npu.index_in_node);
    }
    if (npu.near_cpu >= t.cpus.size()) {
      c.add("npus[%zu].near_cpu: cpu %u does not exist (there are %zu cpus)", i, npu.near_cpu,
            t.cpus.size());
    } else if (t.cpus[npu.near_cpu].node != npu.node) {
      c.add("npus[%zu].near_cpu: cpu %u is on node %u, but the NPU is on node %u", i,
            npu.near_cpu, t.cpus[npu.near_cpu].node, npu.node);
    }
  }
}

void check_switches(const Topology& t, Complaints& c) {
  for (size_t i = 0; i < t.switches.size(); ++i) {
    const dev::SwitchDesc& sw = t.switches[i];
    check_dense_id(c, "switches", i, sw.id);
    if (sw.plane >= t.num_planes)
      c.add("switches[%zu].plane: %u >= num_planes %u", i, sw.plane, t.num_planes);
    if (sw.level == SwitchLevel::kL1) {
      if (sw.node == dev::kInvalidId)
        c.add("switches[%zu].node: missing (an L1 switch sits on a node)", i);
      else if (!node_in_range(t, sw.node))
        c.add("switches[%zu].node: %u >= num_nodes %u", i, sw.node, t.num_nodes);
    } else if (sw.level == SwitchLevel::kL2) {
      if (sw.node != dev::kInvalidId)
        c.add("switches[%zu].node: an L2 switch sits on no node (got %u; leave it out)", i,
              sw.node);
    } else {
      c.add("switches[%zu].level: unknown level %u (expected L1 or L2)", i,
            static_cast<unsigned>(sw.level));
    }
  }
}

// Checks one end of link `i`; returns whether it names an existing NPU or switch.
bool check_endpoint(const Topology& t, Complaints& c, size_t i, const char* end,
                    const Endpoint& e) {
  switch (e.kind) {
    case EndpointKind::kNpu:
      if (e.id < t.npus.size()) return true;
      c.add("links[%zu].%s: npu %u does not exist (there are %zu npus)", i, end, e.id,
            t.npus.size());
      return false;
    case EndpointKind::kSwitch:
      if (e.id < t.switches.size()) return true;
      c.add("links[%zu].%s: switch %u does not exist (there are %zu switches)", i, end, e.id,
            t.switches.size());
      return false;
  }
  c.add("links[%zu].%s.kind: unknown endpoint kind %u (expected Npu or Switch)", i, end,
        static_cast<unsigned>(e.kind));
  return false;
}

// Rules between an NPU end and the switch at the other end of link `i`.
void check_npu_attachment(const Topology& t, Complaints& c, size_t i, const char* switch_end,
                          const dev::NpuDesc& npu, const dev::SwitchDesc& sw) {
  if (sw.level == SwitchLevel::kL2) {
    c.add("links[%zu].%s: npu %u joins L2 switch %u (an NPU joins only an L1 switch)", i,
          switch_end, npu.id, sw.id);
  } else if (sw.level == SwitchLevel::kL1 && sw.node != npu.node) {
    c.add("links[%zu].%s: L1 switch %u is on node %u, but npu %u is on node %u", i, switch_end,
          sw.id, sw.node, npu.id, npu.node);
  }
}

void check_links(const Topology& t, Complaints& c) {
  for (size_t i = 0; i < t.links.size(); ++i) {
    const dev::LinkDesc& l = t.links[i];
    check_dense_id(c, "links", i, l.id);
    bool plane_ok = l.plane < t.num_planes;
    if (!plane_ok) c.add("links[%zu].plane: %u >= num_planes %u", i, l.plane, t.num_planes);
    if (!positive_finite(l.bandwidth_gbps))
      c.add("links[%zu].bandwidth_gbps: must be a finite number > 0 (got %g)", i,
            l.bandwidth_gbps);
    if (!nonnegative_finite(l.latency_ns))
      c.add("links[%zu].latency_ns: must be a finite number >= 0 (got %g)", i, l.latency_ns);
    bool a_ok = check_endpoint(t, c, i, "a", l.a);
    bool b_ok = check_endpoint(t, c, i, "b", l.b);
    if (!a_ok || !b_ok) continue;
    if (l.a == l.b) {
      c.add("links[%zu].b: the same %s %u as .a (a link joins two different ends)", i,
            l.a.kind == EndpointKind::kNpu ? "npu" : "switch", l.a.id);
      continue;
    }
    if (l.a.kind == EndpointKind::kNpu && l.b.kind == EndpointKind::kNpu) {
      c.add("links[%zu]: joins npu %u to npu %u directly (an NPU joins only an L1 switch)", i,
            l.a.id, l.b.id);
      continue;
    }
    for (const auto& [end, e] : {std::pair<const char*, Endpoint>{"a", l.a}, {"b", l.b}}) {
      if (e.kind != EndpointKind::kSwitch) continue;
      const dev::SwitchDesc& sw = t.switches[e.id];
      if (plane_ok && sw.plane != l.plane)
        c.add("links[%zu].%s: switch %u is on plane %u, but the link is on plane %u", i, end,
              sw.id, sw.plane, l.plane);
    }
    if (l.a.kind == EndpointKind::kNpu)
      check_npu_attachment(t, c, i, "b", t.npus[l.a.id], t.switches[l.b.id]);
    else if (l.b.kind == EndpointKind::kNpu)
      check_npu_attachment(t, c, i, "a", t.npus[l.b.id], t.switches[l.a.id]);
  }
}

// Pass 2. Fills `npu_link[npu * num_planes + plane]` with the NPU's link on each plane.
void check_one_link_per_plane(const Topology& t, Complaints& c, std::vector<dev::LinkId>& npu_link) {
  const uint32_t planes = t.num_planes;
  npu_link.assign(t.npus.size() * planes, dev::kInvalidId);
  for (const dev::LinkDesc& l : t.links) {
    for (const auto& [end, e] : {std::pair<const char*, Endpoint>{"a", l.a}, {"b", l.b}}) {
      if (e.kind != EndpointKind::kNpu) continue;
      dev::LinkId& slot = npu_link[static_cast<size_t>(e.id) * planes + l.plane];
      if (slot != dev::kInvalidId)
        c.add("links[%u].%s: npu %u already has link %u on plane %u (one link per NPU per plane)",
              l.id, end, e.id, slot, l.plane);
      else
        slot = l.id;
    }
  }
  for (size_t n = 0; n < t.npus.size(); ++n)
    for (uint32_t p = 0; p < planes; ++p)
      if (npu_link[n * planes + p] == dev::kInvalidId)
        c.add("npus[%zu]: no link on plane %u (each NPU needs exactly one link per plane)", n, p);
}

class UnionFind {
 public:
  explicit UnionFind(size_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), 0u); }
  uint32_t find(uint32_t x) {
    while (parent_[x] != x) x = parent_[x] = parent_[parent_[x]];
    return x;
  }
  void join(uint32_t a, uint32_t b) { parent_[find(a)] = find(b); }

 private:
  std::vector<uint32_t> parent_;
};

// Pass 3.
void check_reachability(const Topology& t, Complaints& c, const std::vector<dev::LinkId>& npu_link) {
  UnionFind components(t.switches.size());
  for (const dev::LinkDesc& l : t.links)
    if (l.a.kind == EndpointKind::kSwitch && l.b.kind == EndpointKind::kSwitch)
      components.join(l.a.id, l.b.id);
  const uint32_t planes = t.num_planes;
  auto switch_of = [&](size_t npu, uint32_t plane) {
    const dev::LinkDesc& l = t.links[npu_link[npu * planes + plane]];
    return l.a.kind == EndpointKind::kSwitch ? l.a.id : l.b.id;
  };
  for (uint32_t p = 0; p < planes; ++p) {
    uint32_t home = switch_of(0, p);
    for (size_t n = 1; n < t.npus.size(); ++n) {
      uint32_t sw = switch_of(n, p);
      if (components.find(sw) == components.find(home)) continue;
      c.add("links: on plane %u, npu %zu cannot reach npu 0 (unreachable: no chain of "
            "switch-to-switch links joins their switches %u and %u)",
            p, n, sw, home);
      break;  // one complaint per plane
    }
  }
}

}  // namespace

Status validate_topology(const Topology& t) {
  Complaints c;
  check_scalars(t, c);
  check_cpus(t, c);
  check_npus(t, c);
  check_switches(t, c);
  check_links(t, c);
  if (!c.empty()) return c.to_status();
  std::vector<dev::LinkId> npu_link;
  check_one_link_per_plane(t, c, npu_link);
  if (!c.empty()) return c.to_status();
  check_reachability(t, c, npu_link);
  return c.to_status();
}

}  // namespace moe::sim
