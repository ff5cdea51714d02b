// What a driver reports about the machine: the supernode description as plain data.
//
// Ids are dense indexes: npus[i].id == i, and likewise for cpus, switches and links, so
// every table below can be indexed directly. A Topology handed out by a driver has passed
// validation (firmware-sim/description.h) and has its derived indexes built (finalize()).
// Units: bandwidth in GB/s (10^9 bytes per second) per direction, latency in nanoseconds,
// capacity in bytes, compute in TFLOPS / TOPS (10^12 per second).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::dev {

using NpuId = uint32_t;
using LinkId = uint32_t;
using SwitchId = uint32_t;
using CpuId = uint32_t;
using PlaneId = uint32_t;
inline constexpr uint32_t kInvalidId = 0xffffffffu;
inline constexpr uint32_t kMaxPlanes = 16;

// A host CPU package; each is one NUMA domain of the supernode.
struct CpuDesc {
  CpuId id = 0;
  uint32_t node = 0;
  uint32_t cores = 0;
};

struct NpuDesc {
  NpuId id = 0;
  uint32_t node = 0;
  uint32_t index_in_node = 0;
  CpuId near_cpu = 0;  // the host CPU (NUMA domain) this NPU attaches to
};

enum class SwitchLevel : uint8_t { kL1 = 1, kL2 = 2 };

struct SwitchDesc {
  SwitchId id = 0;
  SwitchLevel level = SwitchLevel::kL1;
  PlaneId plane = 0;
  uint32_t node = kInvalidId;  // the node an L1 switch sits in; kInvalidId for L2
};

enum class EndpointKind : uint8_t { kNpu, kSwitch };

struct Endpoint {
  EndpointKind kind = EndpointKind::kNpu;
  uint32_t id = 0;
  bool operator==(const Endpoint&) const = default;
};

// A full-duplex link; each direction has `bandwidth_gbps` of its own.
struct LinkDesc {
  LinkId id = 0;
  PlaneId plane = 0;
  Endpoint a;
  Endpoint b;
  double bandwidth_gbps = 0;
  double latency_ns = 0;  // per traversal (one hop)
};

struct ComputeDesc {
  double bf16_tflops = 0;  // dense, per die
  double int8_tops = 0;    // dense, per die
  // Fractions of the rated figures a matrix product reaches (from ../calibration curves):
  // weight-streaming products reach matmul_bandwidth_efficiency of HBM bandwidth; large
  // ones reach matmul_compute_efficiency of the rated rate.
  double matmul_bandwidth_efficiency = 0.57;
  double matmul_compute_efficiency = 0.9;
  double launch_ns = 0;  // fixed cost of starting a kernel
};

struct HbmDesc {
  uint64_t capacity_bytes = 0;  // per NPU package
  double bandwidth_gbps = 0;    // per NPU package
};

struct Topology {
  std::string name;
  uint32_t num_nodes = 0;
  uint32_t num_planes = 0;
  uint32_t dies_per_npu = 1;
  uint32_t packet_bytes = 0;         // payload bytes per fabric packet
  uint32_t packet_header_bytes = 0;  // bytes added per packet on the wire
  double host_link_bandwidth_gbps = 0;  // host CPU <-> NPU (staging copies)
  ComputeDesc compute;
  HbmDesc hbm;
  std::vector<CpuDesc> cpus;
  std::vector<NpuDesc> npus;
  std::vector<SwitchDesc> switches;
  std::vector<LinkDesc> links;

  // ---- derived by finalize(); not part of the description file ----
  // npu_plane_link[npu * num_planes + plane]: the NPU's link on that plane, or kInvalidId.
  std::vector<LinkId> npu_plane_link;
  // npus_of_node[node]: the NPUs of that node, by index in node.
  std::vector<std::vector<NpuId>> npus_of_node;
  // npus_near_cpu[cpu]: the NPUs attached to that CPU.
  std::vector<std::vector<NpuId>> npus_near_cpu;

  uint32_t num_npus() const { return static_cast<uint32_t>(npus.size()); }
  LinkId link_of(NpuId npu, PlaneId plane) const { return npu_plane_link[npu * num_planes + plane]; }
  // Sum over planes of the NPU's link bandwidth, per direction.
  double npu_fabric_bandwidth_gbps(NpuId npu) const;
  // Rebuilds the derived indexes from the description fields. Precondition: the
  // description is valid (ids dense, endpoints exist).
  void finalize();
};

}  // namespace moe::dev
