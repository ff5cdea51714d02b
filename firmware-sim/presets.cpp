// Presets are generated rather than stored: a full cm384 description lists ~3,000 links.
// `moe describe --supernode cm384 --json` writes one out as a description file.
#include "firmware-sim/presets.h"

namespace moe::sim {

dev::Topology make_uniform(const UniformShape& s) {
  dev::Topology t;
  t.name = s.name;
  t.num_nodes = s.nodes;
  t.num_planes = s.planes;
  t.dies_per_npu = s.dies_per_npu;
  t.packet_bytes = 512;
  t.packet_header_bytes = 32;
  t.host_link_bandwidth_gbps = 64.0;
  t.compute.bf16_tflops = 752.0 / 2;  // per die
  t.compute.int8_tops = 1504.0 / 2;
  t.compute.matmul_bandwidth_efficiency = 0.57;
  t.compute.matmul_compute_efficiency = 0.9;
  t.compute.launch_ns = 3000.0;
  t.hbm.capacity_bytes = 128ull << 30;
  t.hbm.bandwidth_gbps = 3200.0;

  for (uint32_t node = 0; node < s.nodes; ++node) {
    for (uint32_t c = 0; c < s.cpus_per_node; ++c) {
      dev::CpuDesc cpu;
      cpu.id = static_cast<uint32_t>(t.cpus.size());
      cpu.node = node;
      cpu.cores = s.cores_per_cpu;
      t.cpus.push_back(cpu);
    }
    for (uint32_t i = 0; i < s.npus_per_node; ++i) {
      dev::NpuDesc npu;
      npu.id = static_cast<uint32_t>(t.npus.size());
      npu.node = node;
      npu.index_in_node = i;
      // NPUs spread evenly over the node's CPUs: with 8 NPUs and 4 CPUs, two per CPU.
      npu.near_cpu = node * s.cpus_per_node + i * s.cpus_per_node / s.npus_per_node;
      t.npus.push_back(npu);
    }
  }
  // Switches: per plane, one L1 per node, then one L2 (only when there are several nodes).
  auto l1_id = [&](uint32_t node, uint32_t plane) { return plane * (s.nodes + 1) + node; };
  auto l2_id = [&](uint32_t plane) { return plane * (s.nodes + 1) + s.nodes; };
  for (uint32_t plane = 0; plane < s.planes; ++plane) {
    for (uint32_t node = 0; node <= s.nodes; ++node) {
      dev::SwitchDesc sw;
      sw.id = static_cast<uint32_t>(t.switches.size());
      sw.plane = plane;
      sw.level = node < s.nodes ? dev::SwitchLevel::kL1 : dev::SwitchLevel::kL2;
      sw.node = node < s.nodes ? node : dev::kInvalidId;
      t.switches.push_back(sw);
    }
  }
  auto add_link = [&](uint32_t plane, dev::Endpoint a, dev::Endpoint b, double gbps, double lat) {
    dev::LinkDesc l;
    l.id = static_cast<uint32_t>(t.links.size());
    l.plane = plane;
    l.a = a;
    l.b = b;
    l.bandwidth_gbps = gbps;
    l.latency_ns = lat;
    t.links.push_back(l);
  };
  for (uint32_t plane = 0; plane < s.planes; ++plane) {
    for (const dev::NpuDesc& npu : t.npus)
      add_link(plane, {dev::EndpointKind::kNpu, npu.id},
               {dev::EndpointKind::kSwitch, l1_id(npu.node, plane)}, s.npu_link_gbps,
               s.hop_latency_ns);
    if (s.nodes > 1) {
      for (uint32_t node = 0; node < s.nodes; ++node)
        add_link(plane, {dev::EndpointKind::kSwitch, l1_id(node, plane)},
                 {dev::EndpointKind::kSwitch, l2_id(plane)}, s.npu_link_gbps * s.npus_per_node,
                 s.hop_latency_ns + s.l1_l2_extra_latency_ns);
    }
  }
  // A single-node machine has no L2 switches: drop them (they would be unconnected).
  if (s.nodes == 1) {
    std::vector<dev::SwitchDesc> kept;
    for (const dev::SwitchDesc& sw : t.switches)
      if (sw.level == dev::SwitchLevel::kL1) kept.push_back(sw);
    // Renumber densely; links refer to L1 ids, which are plane * 2 + 0 before renumbering.
    for (dev::LinkDesc& l : t.links)
      if (l.b.kind == dev::EndpointKind::kSwitch) l.b.id = l.b.id / (s.nodes + 1);
    for (uint32_t i = 0; i < kept.size(); ++i) kept[i].id = i;
    t.switches = kept;
  }
  t.finalize();
  return t;
}

std::vector<std::string> preset_names() { return {"cm384", "n8", "n16", "n64"}; }

StatusOr<dev::Topology> make_preset(std::string_view name) {
  UniformShape shape;
  shape.name = std::string(name);
  if (name == "cm384") {
    shape.nodes = 48;
  } else if (name == "n8") {
    shape.nodes = 1;
  } else if (name == "n16") {
    shape.nodes = 2;
  } else if (name == "n64") {
    shape.nodes = 8;
  } else {
    std::string names;
    for (const std::string& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    return make_error(StatusCode::kNotFound, "no supernode preset named '%.*s' (presets: %s)",
                      static_cast<int>(name.size()), name.data(), names.c_str());
  }
  return make_uniform(shape);
}

}  // namespace moe::sim
