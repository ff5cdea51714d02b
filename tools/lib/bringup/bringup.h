// The bring-up checks of an appliance, as library functions with structured results.
//
// moe-bringup (tools/bringup/main.cpp) is a thin front end over these; tests call them
// directly on small supernodes with injected faults.
//
// Each check appends CheckEntry values to a BringupReport. An entry names its target with
// whatever applies (node, NPU, plane, link; kInvalidId where not), says whether it passed,
// what was measured and expected (numbers in the entry's unit), and a message a technician
// reads. A fault is reported at the finest place it can be pinned to: a plane that is down
// is one plane entry plus one entry per link of that plane; a link that is down is that
// link (with its endpoints); a lost NPU is that NPU. Transfers that fail because of a fault
// already named are not reported again.
//
// Checks (each uses only dev::Driver, owns what it creates and frees it before returning):
//  - check_host: the host's packages, NUMA nodes, cores, PCI devices (hwloc) and the
//    placement plan of every NPU's dispatch thread and staging memory on it.
//  - check_hbm: on every NPU, reserve + commit `hbm_sample_bytes`, write/read walking-ones
//    through hbm_map_host, then an address-in-data pattern through host-copy work
//    (host -> device, device -> host), verified both ways.
//  - check_links: for every NPU and plane, transfers restricted to that plane to a peer in
//    the same node and to one in another node: completion status, modelled latency of a
//    one-packet transfer against the route's hop latencies plus serialisation, and
//    bandwidth of a large one against the link's rated bandwidth (payload share of the
//    wire bytes), both within `tolerance`; then link_state / plane_state of every link and
//    plane. Timing mode (no payload): no HBM is used.
//  - check_all_to_all: fabric_smoke's timing all-to-all across all NPUs.
// Thread-safety: none; one caller per driver at a time. Blocking: runs to completion.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/device/driver.h"
#include "runtime/host/host_topology.h"

namespace moe::tools::bringup {

struct CheckEntry {
  std::string check;  // "host", "placement", "hbm", "link", "plane", "npu", "all-to-all"
  uint32_t node = dev::kInvalidId;
  uint32_t npu = dev::kInvalidId;
  uint32_t plane = dev::kInvalidId;
  uint32_t link = dev::kInvalidId;
  bool passed = false;
  double measured = 0;  // in `unit`; 0 when nothing was measured
  double expected = 0;
  std::string unit;     // "ns", "GB/s", "bytes", ""
  std::string message;
};

struct BringupReport {
  std::string supernode;
  std::string host_text;       // HostSummary::to_text()
  std::string placement_text;  // PlacementPlan::to_text()
  std::vector<CheckEntry> entries;
  std::vector<std::string> injected;  // the faults injected, as given

  bool passed() const;
  size_t failures() const;
  // Counts per check, then every failure (where, measured vs expected, message).
  std::string to_text() const;
  // {"supernode", "passed", "failures", "injected":[...], "entries":[{...}, ...]}
  std::string to_json() const;
};

// A fault named on the command line: "plane-down:P", "npu-lost:N", "link-down:L",
// "hbm-error:N". kInvalidArgument names the bad spec (unknown kind, missing or bad number,
// target out of range for `topology`).
StatusOr<dev::FaultSpec> parse_inject_spec(std::string_view spec, const dev::Topology& topology);

struct CheckOptions {
  uint64_t hbm_sample_bytes = 64 * 1024;   // multiple of 4 KiB
  uint64_t link_small_bytes = 0;           // 0: one packet (topology packet_bytes)
  uint64_t link_large_bytes = 4ull << 20;  // bandwidth probe per link
  double tolerance = 0.10;                 // relative, latency and bandwidth
  uint64_t all_to_all_bytes_per_pair = 64 * 1024;
  // Progress lines ("hbm: 128/384 NPUs"); may be empty.
  std::function<void(const std::string&)> progress;
};

// Appends the host and placement entries and fills host_text / placement_text.
void check_host(const dev::Topology& topology, const rt::host::HostTopology& host,
                BringupReport* report);
void check_hbm(dev::Driver& driver, const CheckOptions& options, BringupReport* report);
void check_links(dev::Driver& driver, const CheckOptions& options, BringupReport* report);
void check_all_to_all(dev::Driver& driver, const CheckOptions& options, BringupReport* report);

// check_hbm, check_links, check_all_to_all in that order (not the host check).
void run_device_checks(dev::Driver& driver, const CheckOptions& options, BringupReport* report);

// "NPU 5 (node 0, #5)", "link 12 (plane 3: NPU 5 <-> switch 7)": names for messages.
std::string describe_npu(const dev::Topology& topology, dev::NpuId npu);
std::string describe_link(const dev::Topology& topology, dev::LinkId link);

}  // namespace moe::tools::bringup
