// Placement of dispatch threads and staging memory on synthetic multi-NUMA hosts.
//
// Every (host shape x supernode) pair is checked against the rules of placement.h: each
// thread's cpuset lies inside its host NUMA node, NPUs near one supernode CPU share a host
// node, supernode CPUs spread evenly, cores are shared (and said to be) only when threads
// outnumber them, and the same inputs give the same plan.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "firmware-sim/presets.h"
#include "runtime/base/options.h"
#include "runtime/host/host_topology.h"
#include "runtime/host/placement.h"

namespace {

using moe::StatusCode;
using moe::dev::Topology;
using moe::rt::host::CoreInfo;
using moe::rt::host::CpuSet;
using moe::rt::host::HostSummary;
using moe::rt::host::HostTopology;
using moe::rt::host::NumaNodeInfo;
using moe::rt::host::PlacementOptions;
using moe::rt::host::PlacementPlan;
using moe::rt::host::plan_placement;

const char* const kHosts[] = {"pack:2 numa:2 core:4 pu:1", "pack:4 numa:2 core:8 pu:2",
                              "numa:1 core:2 pu:1"};
const char* const kSupernodes[] = {"cm384", "n16", "n8"};

HostTopology synthetic(const char* desc) {
  auto t = HostTopology::from_synthetic(desc);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(t).value();
}

Topology preset(const char* name) {
  auto t = moe::sim::make_preset(name);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(t).value();
}

PlacementPlan plan(const Topology& sn, const HostSummary& host, PlacementOptions opts = {}) {
  auto p = plan_placement(sn, host, opts);
  REQUIRE_MESSAGE(p.ok(), p.status().to_string());
  return std::move(p).value();
}

bool has_note(const PlacementPlan& p, const std::string& text) {
  for (const std::string& n : p.notes)
    if (n.find(text) != std::string::npos) return true;
  return false;
}

std::string notes_of(const PlacementPlan& p) {
  std::string all;
  for (const std::string& n : p.notes) all += n + "\n";
  return all;
}

// The rules of placement.h, checked on any plan.
void check_plan(const Topology& sn, const HostSummary& host, const PlacementPlan& p,
                uint32_t npus_per_thread, uint32_t cores_per_node) {
  REQUIRE(p.npus.size() == sn.npus.size());
  REQUIRE(p.cpu_numa_node.size() == sn.cpus.size());
  REQUIRE(p.nodes.size() == host.numa_nodes.size());

  // Every NPU is served by exactly one thread, which lists it, on its CPU's host node.
  std::vector<int> served(sn.npus.size(), 0);
  for (size_t i = 0; i < p.threads.size(); ++i) {
    const auto& t = p.threads[i];
    CHECK(t.index == i);
    CHECK(!t.npus.empty());
    CHECK(t.npus.size() <= npus_per_thread);
    CHECK(std::is_sorted(t.npus.begin(), t.npus.end()));
    REQUIRE(t.core < host.cores.size());
    REQUIRE(t.numa_node < host.numa_nodes.size());
    CHECK(t.cpus == host.cores[t.core].cpus);
    CHECK(host.cores[t.core].numa_node == static_cast<int32_t>(t.numa_node));
    // The dispatch thread's cpuset lies inside its NUMA node's cpuset.
    CHECK(!t.cpus.empty());
    CHECK(t.cpus.is_subset_of(host.numa_nodes[t.numa_node].cpus));
    CHECK(t.numa_node == p.cpu_numa_node[t.supernode_cpu]);
    for (auto npu : t.npus) {
      ++served[npu];
      CHECK(sn.npus[npu].near_cpu == t.supernode_cpu);
      CHECK(p.npus[npu].thread == t.index);
    }
  }
  for (size_t npu = 0; npu < sn.npus.size(); ++npu) {
    CHECK(served[npu] == 1);
    CHECK(p.npus[npu].numa_node == p.cpu_numa_node[sn.npus[npu].near_cpu]);
    CHECK(p.thread_of(static_cast<uint32_t>(npu)).numa_node == p.npus[npu].numa_node);
  }

  // NPUs near the same supernode CPU map to the same host node.
  std::map<uint32_t, std::set<uint32_t>> nodes_of_cpu;
  for (size_t npu = 0; npu < sn.npus.size(); ++npu)
    nodes_of_cpu[sn.npus[npu].near_cpu].insert(p.npus[npu].numa_node);
  for (const auto& [cpu, nodes] : nodes_of_cpu) CHECK(nodes.size() == 1);

  // Supernode CPUs spread evenly over the host's nodes (all eligible here): counts differ
  // by at most one; with more CPUs than nodes every node is used.
  std::vector<size_t> cpus_per_node(host.numa_nodes.size(), 0);
  for (uint32_t n : p.cpu_numa_node) ++cpus_per_node[n];
  auto [lo, hi] = std::minmax_element(cpus_per_node.begin(), cpus_per_node.end());
  CHECK(*hi - *lo <= 1);
  for (size_t n = 0; n < host.numa_nodes.size(); ++n)
    CHECK(p.nodes[n].supernode_cpus.size() == cpus_per_node[n]);

  // Threads per core: balanced within a node, counted right, sharing only when needed.
  std::map<uint32_t, uint32_t> load;
  for (const auto& t : p.threads) ++load[t.core];
  bool any_shared = false;
  for (const auto& t : p.threads) CHECK(t.threads_on_core == load[t.core]);
  for (size_t n = 0; n < host.numa_nodes.size(); ++n) {
    const auto& np = p.nodes[n];
    uint32_t usable = host.numa_nodes[n].num_cores;
    if (cores_per_node > 0) usable = std::min(usable, cores_per_node);
    uint32_t lo_load = UINT32_MAX, hi_load = 0;
    for (uint32_t core : np.cores) {
      lo_load = std::min(lo_load, load[core]);
      hi_load = std::max(hi_load, load[core]);
    }
    if (np.num_threads == 0) continue;
    CHECK(hi_load - lo_load <= 1);
    CHECK(np.max_threads_per_core == hi_load);
    CHECK(np.cores.size() == std::min(np.num_threads, usable));
    if (np.num_threads > usable) any_shared = true;
    else CHECK(hi_load == 1);
  }
  uint32_t cores_used = 0;
  for (const auto& np : p.nodes) cores_used += static_cast<uint32_t>(np.cores.size());
  CHECK(p.cores_used == cores_used);
  CHECK(load.size() == cores_used);
  CHECK(p.cores_shared == any_shared);
  CHECK_MESSAGE(has_note(p, " share ") == any_shared, notes_of(p));
}

}  // namespace

TEST_CASE("rt.host.placement: every supernode on every synthetic host follows the rules") {
  for (const char* host_desc : kHosts) {
    HostTopology host = synthetic(host_desc);
    for (const char* name : kSupernodes) {
      CAPTURE(host_desc);
      CAPTURE(name);
      Topology sn = preset(name);
      for (uint32_t per_thread : {1u, 2u, 3u}) {
        for (uint32_t cores_per_node : {0u, 1u, 3u}) {
          CAPTURE(per_thread);
          CAPTURE(cores_per_node);
          PlacementOptions opts;
          opts.npus_per_thread = per_thread;
          opts.cores_per_node = cores_per_node;
          PlacementPlan p = plan(sn, host.summary(), opts);
          check_plan(sn, host.summary(), p, per_thread, cores_per_node);
          // Deterministic: again, and from another topology object of the same shape.
          CHECK(plan(sn, host.summary(), opts) == p);
          HostTopology again = synthetic(host_desc);
          CHECK(plan(sn, again.summary(), opts) == p);
        }
      }
    }
  }
}

TEST_CASE("rt.host.placement: cm384 on a 2-core, 1-node host shares cores and says so") {
  HostTopology host = synthetic("numa:1 core:2 pu:1");
  Topology sn = preset("cm384");
  PlacementPlan p = plan(sn, host.summary());
  CHECK(p.threads.size() == 384);
  CHECK(p.cores_used == 2);
  CHECK(p.cores_shared);
  CHECK_MESSAGE(has_note(p, "192 supernode CPUs mapped onto 1 host NUMA node (192 per node)"), notes_of(p));
  CHECK_MESSAGE(has_note(p, "384 dispatch threads share 2 cores (up to 192 per core)"), notes_of(p));
  // Consecutive threads share: the first half on core 0, the second on core 1.
  CHECK(p.threads[0].core == 0);
  CHECK(p.threads[191].core == 0);
  CHECK(p.threads[192].core == 1);
  CHECK(p.to_text().find("note: 384 dispatch threads share 2 cores") != std::string::npos);
  CHECK(p.to_json().find("\"cores_shared\":true") != std::string::npos);
}

TEST_CASE("rt.host.placement: cm384 on 8 host nodes keeps each supernode node on one host node") {
  HostTopology host = synthetic("pack:4 numa:2 core:8 pu:2");
  Topology sn = preset("cm384");
  PlacementPlan p = plan(sn, host.summary());
  CHECK_MESSAGE(has_note(p, "192 supernode CPUs mapped onto 8 host NUMA nodes (24 per node)"), notes_of(p));
  CHECK_MESSAGE(has_note(p, "384 dispatch threads share 64 cores (up to 6 per core)"), notes_of(p));
  for (const auto& cpu : sn.cpus)  // the 4 CPUs of a supernode node: one host node
    CHECK(p.cpu_numa_node[cpu.id] == p.cpu_numa_node[cpu.node * 4]);
  // Blocks in order: CPUs 0-23 on node 0, ..., 168-191 on node 7.
  for (uint32_t c = 0; c < 192; ++c) CHECK(p.cpu_numa_node[c] == c / 24);
}

TEST_CASE("rt.host.placement: fewer supernode CPUs than host nodes spread out, one per node") {
  HostTopology host = synthetic("pack:4 numa:2 core:8 pu:2");
  Topology sn = preset("n8");  // 4 CPUs, 8 NPUs
  PlacementPlan p = plan(sn, host.summary());
  CHECK(p.cpu_numa_node == std::vector<uint32_t>{0, 2, 4, 6});
  CHECK_MESSAGE(has_note(p, "4 supernode CPUs spread over 8 host NUMA nodes: one per node, 4 node(s) unused"), notes_of(p));
  CHECK_MESSAGE(has_note(p, "8 dispatch threads, each on a core of its own"), notes_of(p));
  CHECK_FALSE(p.cores_shared);
  // The two threads of node 0 spread over its 8 cores: cores 0 and 4.
  CHECK(p.threads[0].core == 0);
  CHECK(p.threads[1].core == 4);
  CHECK(p.threads[1].cpus == CpuSet({8, 9}));
}

TEST_CASE("rt.host.placement: NPU groups and the core limit are options, and noted") {
  HostTopology host = synthetic("pack:2 numa:2 core:4 pu:1");
  Topology sn = preset("n16");  // 8 CPUs, 2 NPUs each
  REQUIRE(moe::opt::set_option("RT_HOST_NPUS_PER_THREAD", "2").ok());
  REQUIRE(moe::opt::set_option("RT_HOST_CORES_PER_NODE", "1").ok());
  PlacementOptions opts = PlacementOptions::from_options();
  REQUIRE(moe::opt::reset_option("RT_HOST_NPUS_PER_THREAD").ok());
  REQUIRE(moe::opt::reset_option("RT_HOST_CORES_PER_NODE").ok());
  CHECK(opts.npus_per_thread == 2);
  CHECK(opts.cores_per_node == 1);
  CHECK(PlacementOptions::from_options().npus_per_thread == 1);

  PlacementPlan p = plan(sn, host.summary(), opts);
  CHECK(p.threads.size() == 8);
  for (const auto& t : p.threads) CHECK(t.npus == std::vector<uint32_t>{2 * t.index, 2 * t.index + 1});
  CHECK(p.cores_used == 4);  // one per node
  CHECK(has_note(p, "2 NPUs per dispatch thread"));
  CHECK(has_note(p, "at most 1 core(s) per host NUMA node (RT_HOST_CORES_PER_NODE)"));
  CHECK(has_note(p, "8 dispatch threads share 4 cores (up to 2 per core)"));

  // Groups never cross a supernode CPU: 3 per thread with 2 NPUs per CPU is still 2.
  opts.npus_per_thread = 3;
  opts.cores_per_node = 0;
  PlacementPlan wide = plan(sn, host.summary(), opts);
  CHECK(wide.threads.size() == 8);

  opts.npus_per_thread = 0;
  auto bad = plan_placement(sn, host.summary(), opts);
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("npus_per_thread") != std::string::npos);
}

TEST_CASE("rt.host.placement: memory-only and uneven host nodes") {
  // Node 1 has memory but no cores (CXL- or HBM-style); node 2 has 3 cores, node 0 one.
  HostSummary host;
  host.source = "hand-made";
  for (uint32_t n = 0; n < 3; ++n) {
    NumaNodeInfo node;
    node.logical_index = n;
    node.os_index = n;
    node.memory_bytes = 1ull << 30;
    host.numa_nodes.push_back(node);
  }
  auto add_core = [&](uint32_t node, uint32_t pu) {
    CoreInfo c;
    c.logical_index = static_cast<uint32_t>(host.cores.size());
    c.os_index = pu;
    c.numa_node = static_cast<int32_t>(node);
    c.cpus = CpuSet({pu});
    host.cores.push_back(c);
    host.numa_nodes[node].cpus = CpuSet([&] {
      auto v = host.numa_nodes[node].cpus.pus();
      v.push_back(pu);
      return v;
    }());
    ++host.numa_nodes[node].num_cores;
    ++host.num_pus;
  };
  add_core(0, 0);
  add_core(2, 1);
  add_core(2, 2);
  add_core(2, 3);

  Topology sn = preset("n16");
  PlacementPlan p = plan(sn, host);
  CHECK_FALSE(p.nodes[1].eligible);
  CHECK(p.nodes[1].supernode_cpus.empty());
  CHECK(p.nodes[1].num_threads == 0);
  for (uint32_t n : p.cpu_numa_node) CHECK(n != 1);
  CHECK(p.nodes[0].supernode_cpus.size() == 4);
  CHECK(p.nodes[2].supernode_cpus.size() == 4);
  CHECK_MESSAGE(has_note(p, "host NUMA node L#1 (P#1) has no cores of its own"), notes_of(p));
  CHECK(has_note(p, "8 supernode CPUs mapped onto 2 host NUMA nodes (4 per node)"));
  for (const auto& t : p.threads) CHECK(t.cpus.is_subset_of(host.numa_nodes[t.numa_node].cpus));
  CHECK(p.nodes[0].max_threads_per_core == 8);
  CHECK(p.nodes[2].max_threads_per_core == 3);  // 8 threads over 3 cores: 3, 3, 2
  CHECK(p.to_text().find("NUMA L#1: no cores, unused") != std::string::npos);

  HostSummary no_cores;
  no_cores.source = "coreless";
  no_cores.numa_nodes.push_back(NumaNodeInfo{});
  auto refused = plan_placement(sn, no_cores, PlacementOptions{});
  CHECK(refused.status().code() == StatusCode::kFailedPrecondition);
  CHECK(refused.status().message().find("coreless") != std::string::npos);
}

TEST_CASE("rt.host.placement: bad supernode descriptions are refused, naming the NPU") {
  HostTopology host = synthetic("numa:1 core:2 pu:1");
  Topology sn = preset("n8");
  sn.npus[5].near_cpu = 9;
  auto bad = plan_placement(sn, host.summary(), PlacementOptions{});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("npu 5: near_cpu 9") != std::string::npos);

  Topology no_cpus = preset("n8");
  no_cpus.cpus.clear();
  CHECK(plan_placement(no_cpus, host.summary(), PlacementOptions{}).status().code() ==
        StatusCode::kInvalidArgument);

  Topology empty;
  PlacementPlan p = plan(empty, host.summary());
  CHECK(p.threads.empty());
  CHECK(has_note(p, "no NPUs"));
}
