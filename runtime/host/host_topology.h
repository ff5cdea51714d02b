// The host machine the runtime runs on, as hwloc sees it: packages, NUMA nodes, cores, PUs
// and PCI devices.
//
// A HostTopology owns one loaded hwloc topology, from one of three sources:
//   discover()        the real host (I/O devices included, so PCI devices are listed);
//   from_synthetic()  an hwloc synthetic description such as "pack:2 numa:2 core:4 pu:1",
//                     to test placement against a host shape we do not have;
//   from_xml_file()   an XML export (`lstopo --of xml FILE`, or export_xml_file()) of some
//                     other machine.
// Only a discovered topology is "this system": binding threads or memory is possible only
// there (runtime/host/binding.h); on the others it is refused with kUnsupported.
//
// Everything callers need is copied out once, at load, into HostSummary (plain data, no hwloc
// types), so the rest of the runtime never holds hwloc objects. Indexes: NUMA nodes, cores and
// packages are numbered by hwloc's *logical* index (dense, 0..n-1, in topology order); PUs by
// their *OS* index (what the kernel calls a CPU number). Every NUMA node, core and package
// also records its OS index for messages.
//
// Thread-safety: a loaded HostTopology is immutable; any number of threads may read its
// summary and pass it to the binding functions concurrently. Moving one while another thread
// uses it is a data race.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/host/cpu_set.h"

struct hwloc_topology;  // hwloc's handle; only runtime/host/*.cpp include <hwloc.h>

namespace moe::rt::host {

inline constexpr int32_t kNoIndex = -1;

struct PackageInfo {
  uint32_t logical_index = 0;
  uint32_t os_index = 0;
  CpuSet cpus;
  bool operator==(const PackageInfo&) const = default;
};

struct NumaNodeInfo {
  uint32_t logical_index = 0;
  uint32_t os_index = 0;
  uint64_t memory_bytes = 0;  // local memory hwloc reports; 0 when unknown
  CpuSet cpus;                // PUs local to the node; empty for a memory-only node
  uint32_t num_cores = 0;     // cores assigned to this node (CoreInfo::numa_node)
  int32_t package = kNoIndex; // logical index of the package holding it, if any
  bool operator==(const NumaNodeInfo&) const = default;
};

// A core, or a lone PU where hwloc reports PUs without a Core above them (then is_pu_only).
struct CoreInfo {
  uint32_t logical_index = 0;  // position in HostSummary::cores
  uint32_t os_index = 0;       // the Core's OS index, or the PU's when is_pu_only
  int32_t numa_node = kNoIndex;  // the most local NUMA node whose cpuset holds the core
  int32_t package = kNoIndex;
  CpuSet cpus;
  bool is_pu_only = false;
  bool operator==(const CoreInfo&) const = default;
};

struct PciDeviceInfo {
  std::string bus_id;  // "0000:3b:00.0" (domain:bus:device.function, hex)
  uint16_t vendor_id = 0;
  uint16_t device_id = 0;
  uint16_t class_id = 0;  // PCI class and subclass, e.g. 0x0200 Ethernet
  std::string name;       // hwloc's name for the device; empty when it has none
  std::vector<std::string> os_devices;  // kernel names below it: "eth0", "nvme0n1", ...
  // The NUMA node nearest the device (logical index): the first NUMA node local to the
  // device's closest non-I/O ancestor; kNoIndex when hwloc knows none.
  int32_t numa_node = kNoIndex;
  bool operator==(const PciDeviceInfo&) const = default;
};

struct HostSummary {
  std::string source;         // "this system", "synthetic \"...\"", "xml FILE"
  bool is_this_system = false;
  std::vector<PackageInfo> packages;
  std::vector<NumaNodeInfo> numa_nodes;
  std::vector<CoreInfo> cores;
  uint32_t num_pus = 0;
  std::vector<PciDeviceInfo> pci_devices;

  // The machine described, ignoring where the description came from (source,
  // is_this_system): a synthetic topology and its XML export compare equal.
  bool same_hardware(const HostSummary& other) const;
  // {"source":..., "packages":[...], "numa_nodes":[...], "cores":N, "pus":N, "pci":[...]}
  std::string to_json() const;
  // A few lines a technician reads: counts, then one line per NUMA node and PCI device.
  std::string to_text() const;
};

class HostTopology {
 public:
  // The real host, with PCI devices (hwloc's "important" I/O filter) and only the PUs and
  // NUMA nodes this process may use. Blocking (reads /sys; tens of milliseconds).
  static StatusOr<HostTopology> discover();
  // A synthetic host. Errors (kInvalidArgument): an empty description, one hwloc refuses
  // (the message names the offending token where it can tell), or one with more PUs than
  // the option RT_HOST_SYNTHETIC_MAX_PUS.
  static StatusOr<HostTopology> from_synthetic(std::string_view description);
  // A host from an hwloc XML export, PCI devices included. Errors: kNotFound (no such file), kInvalidArgument (a
  // directory or unreadable), kParseError (hwloc cannot load it).
  static StatusOr<HostTopology> from_xml_file(const std::string& path);

  // An empty placeholder (no hwloc topology; summary() empty). Only for StatusOr and moves.
  HostTopology() = default;
  HostTopology(HostTopology&& other) noexcept;
  HostTopology& operator=(HostTopology&& other) noexcept;
  HostTopology(const HostTopology&) = delete;
  HostTopology& operator=(const HostTopology&) = delete;
  ~HostTopology();

  bool loaded() const { return topology_ != nullptr; }
  const HostSummary& summary() const { return summary_; }
  bool is_this_system() const { return summary_.is_this_system; }
  // The description hwloc loaded (PU level added) for a synthetic host; empty otherwise.
  const std::string& synthetic_description() const { return synthetic_; }
  // Writes the topology as hwloc XML (loadable by from_xml_file and `lstopo -i FILE`).
  // kFailedPrecondition when not loaded; kInvalidArgument when the file cannot be written.
  Status export_xml_file(const std::string& path) const;

  // The hwloc handle, for runtime/host/*.cpp only. Owned by this object; never destroy it.
  hwloc_topology* native_handle() const { return topology_; }

 private:
  HostTopology(hwloc_topology* topology, std::string source, bool is_this_system);

  hwloc_topology* topology_ = nullptr;
  HostSummary summary_;
  std::string synthetic_;
};

}  // namespace moe::rt::host
