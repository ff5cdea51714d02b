#include "runtime/device/topology.h"

namespace moe::dev {

double Topology::npu_fabric_bandwidth_gbps(NpuId npu) const {
  double total = 0;
  for (PlaneId p = 0; p < num_planes; ++p) {
    LinkId l = link_of(npu, p);
    if (l != kInvalidId) total += links[l].bandwidth_gbps;
  }
  return total;
}

void Topology::finalize() {
  npu_plane_link.assign(static_cast<size_t>(npus.size()) * num_planes, kInvalidId);
  for (const LinkDesc& l : links) {
    for (const Endpoint& e : {l.a, l.b}) {
      if (e.kind == EndpointKind::kNpu && e.id < npus.size() && l.plane < num_planes)
        npu_plane_link[static_cast<size_t>(e.id) * num_planes + l.plane] = l.id;
    }
  }
  npus_of_node.assign(num_nodes, {});
  npus_near_cpu.assign(cpus.size(), {});
  for (const NpuDesc& n : npus) {
    if (n.node < num_nodes) npus_of_node[n.node].push_back(n.id);
    if (n.near_cpu < cpus.size()) npus_near_cpu[n.near_cpu].push_back(n.id);
  }
}

}  // namespace moe::dev
