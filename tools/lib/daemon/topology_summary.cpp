// Topology summary: one pass over links, planes and NPUs asking the driver their state.
#include "tools/lib/daemon/topology_summary.h"

#include "runtime/base/log.h"

namespace moe::daemon {

proto::TopologySummary summarize_topology(rt::Runtime& runtime) {
  const dev::Topology& topology = runtime.topology();
  dev::Driver& driver = runtime.driver();
  proto::TopologySummary out;
  out.name = topology.name;
  out.num_nodes = topology.num_nodes;
  out.num_npus = topology.num_npus();
  out.dies_per_npu = topology.dies_per_npu;
  out.num_planes = topology.num_planes;
  out.num_links = static_cast<uint32_t>(topology.links.size());
  out.hbm_bytes_per_npu = topology.hbm.capacity_bytes;
  for (uint32_t link = 0; link < out.num_links; ++link) {
    dev::LinkState state;
    Status status = driver.link_state(link, &state);
    if (!status.ok()) {
      MOE_WARN("status: link %u: %s", link, status.to_string().c_str());
    } else if (state.health == dev::LinkHealth::kDown) {
      ++out.links_down;
    }
  }
  for (uint32_t plane = 0; plane < topology.num_planes; ++plane) {
    dev::PlaneState state;
    Status status = driver.plane_state(plane, &state);
    if (!status.ok()) {
      MOE_WARN("status: plane %u: %s", plane, status.to_string().c_str());
    } else if (state.health == dev::LinkHealth::kDown) {
      out.planes_down.push_back(plane);
    }
  }
  for (uint32_t npu = 0; npu < out.num_npus; ++npu) {
    dev::NpuState state;
    Status status = driver.npu_state(npu, &state);
    if (!status.ok()) {
      MOE_WARN("status: NPU %u: %s", npu, status.to_string().c_str());
    } else if (state.lost) {
      out.npus_lost.push_back(npu);
    }
  }
  return out;
}

}  // namespace moe::daemon
