// The host check: what hwloc sees (packages, NUMA nodes, cores, PCI) and whether every NPU
// of the supernode gets a dispatch thread on a host core and a NUMA node for its staging
// memory (runtime/host/placement.h).
#include "runtime/base/strformat.h"
#include "runtime/host/placement.h"
#include "tools/lib/bringup/bringup.h"

namespace moe::tools::bringup {

void check_host(const dev::Topology& topology, const rt::host::HostTopology& host,
                BringupReport* report) {
  const rt::host::HostSummary& s = host.summary();
  report->host_text = s.to_text();
  CheckEntry h;
  h.check = "host";
  h.passed = !s.cores.empty() && !s.numa_nodes.empty();
  h.measured = static_cast<double>(s.cores.size());
  h.unit = "cores";
  h.message = strformat("%s: %zu packages, %zu NUMA nodes, %zu cores, %u PUs, %zu PCI devices",
                        s.source.c_str(), s.packages.size(), s.numa_nodes.size(), s.cores.size(),
                        s.num_pus, s.pci_devices.size());
  if (!h.passed) h.message += " (no cores or no NUMA nodes: nothing to run dispatch threads on)";
  report->entries.push_back(h);

  CheckEntry p;
  p.check = "placement";
  StatusOr<rt::host::PlacementPlan> plan =
      rt::host::plan_placement(topology, host, rt::host::PlacementOptions::from_options());
  if (!plan.ok()) {
    p.passed = false;
    p.message = "no placement plan: " + plan.status().to_string();
    report->entries.push_back(p);
    return;
  }
  report->placement_text = plan->to_text();
  // Every NPU must have a thread on a core of an eligible node, and its staging node must
  // be the node its thread runs on.
  uint32_t bad = 0;
  for (dev::NpuId n = 0; n < topology.num_npus() && n < plan->npus.size(); ++n) {
    const rt::host::NpuPlacement& np = plan->npus[n];
    const rt::host::DispatchThreadPlan& th = plan->thread_of(n);
    if (np.numa_node != th.numa_node || th.core >= s.cores.size() || th.cpus.empty()) {
      CheckEntry e;
      e.check = "placement";
      e.npu = n;
      e.node = topology.npus[n].node;
      e.passed = false;
      e.message = strformat("%s: staging node %u but dispatch thread on node %u, core %u",
                            describe_npu(topology, n).c_str(), np.numa_node, th.numa_node, th.core);
      report->entries.push_back(e);
      ++bad;
    }
  }
  if (plan->npus.size() != topology.num_npus()) {
    p.passed = false;
    p.message = strformat("plan places %zu NPUs, supernode has %u", plan->npus.size(),
                          topology.num_npus());
  } else {
    p.passed = bad == 0;
    p.measured = static_cast<double>(plan->threads.size());
    p.unit = "threads";
    p.message = strformat("%u NPUs -> %zu dispatch threads on %u cores of %zu NUMA nodes%s",
                          topology.num_npus(), plan->threads.size(), plan->cores_used,
                          s.numa_nodes.size(), plan->cores_shared ? " (cores shared)" : "");
  }
  report->entries.push_back(p);
}

}  // namespace moe::tools::bringup
