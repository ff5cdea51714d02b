// The placement plan: integer arithmetic over the two descriptions, nothing else.
//
// Both spreads (supernode CPUs over host nodes, threads over a node's cores) use the same
// proportional rule, item i of N into bucket floor(i * B / N) of B, which keeps bucket sizes
// within one of each other and keeps neighbours together; see placement.h for why. Products
// are taken in 64 bits: 192 CPUs x 1024 nodes or 10^5 threads x 10^3 cores cannot overflow.
#include "runtime/host/placement.h"

#include <algorithm>

#include "runtime/base/json.h"
#include "runtime/base/log.h"
#include "runtime/host/host_options.h"

namespace moe::rt::host {
namespace {

uint32_t bucket_of(uint64_t item, uint64_t items, uint64_t buckets) {
  return static_cast<uint32_t>(item * buckets / items);
}

std::string plural(uint64_t n, const char* one, const char* many) {
  return strformat("%llu %s", static_cast<unsigned long long>(n), n == 1 ? one : many);
}

std::string range_text(uint32_t lo, uint32_t hi) {
  return lo == hi ? strformat("%u", lo) : strformat("%u-%u", lo, hi);
}

}  // namespace

PlacementOptions PlacementOptions::from_options() {
  PlacementOptions o;
  int64_t per_thread = options::kNpusPerThread.get();
  int64_t per_node = options::kCoresPerNode.get();
  o.npus_per_thread = per_thread < 0 ? 0 : static_cast<uint32_t>(std::min<int64_t>(per_thread, UINT32_MAX));
  o.cores_per_node = per_node < 0 ? 0 : static_cast<uint32_t>(std::min<int64_t>(per_node, UINT32_MAX));
  return o;
}

StatusOr<PlacementPlan> plan_placement(const dev::Topology& supernode, const HostSummary& host,
                                       const PlacementOptions& options) {
  if (options.npus_per_thread == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "placement: npus_per_thread is 0 (RT_HOST_NPUS_PER_THREAD must be >= 1)");
  const uint32_t num_cpus = static_cast<uint32_t>(supernode.cpus.size());
  if (num_cpus == 0 && !supernode.npus.empty())
    return make_error(StatusCode::kInvalidArgument,
                      "placement: supernode '%s' has %zu NPUs but no host CPUs to attach them to",
                      supernode.name.c_str(), supernode.npus.size());
  for (size_t i = 0; i < supernode.npus.size(); ++i) {
    if (supernode.npus[i].near_cpu >= num_cpus)
      return make_error(StatusCode::kInvalidArgument,
                        "placement: npu %zu: near_cpu %u names no host CPU (supernode '%s' has %u)",
                        i, supernode.npus[i].near_cpu, supernode.name.c_str(), num_cpus);
  }
  if (host.cores.empty())
    return make_error(StatusCode::kFailedPrecondition,
                      "placement: host '%s' has no cores to run dispatch threads on",
                      host.source.c_str());

  PlacementPlan plan;
  const size_t num_nodes = host.numa_nodes.size();
  plan.nodes.resize(num_nodes);
  std::vector<std::vector<uint32_t>> node_cores(num_nodes);
  uint32_t orphan_cores = 0;
  for (const CoreInfo& core : host.cores) {
    if (core.numa_node == kNoIndex || static_cast<size_t>(core.numa_node) >= num_nodes) {
      ++orphan_cores;
      continue;
    }
    node_cores[static_cast<size_t>(core.numa_node)].push_back(core.logical_index);
  }
  std::vector<uint32_t> eligible;
  for (size_t n = 0; n < num_nodes; ++n) {
    plan.nodes[n].numa_node = static_cast<uint32_t>(n);
    plan.nodes[n].eligible = !node_cores[n].empty();
    if (plan.nodes[n].eligible) eligible.push_back(static_cast<uint32_t>(n));
  }
  if (eligible.empty())
    return make_error(StatusCode::kFailedPrecondition,
                      "placement: host '%s' has %zu cores but none belongs to a NUMA node",
                      host.source.c_str(), host.cores.size());

  // 1. Supernode CPUs onto host nodes.
  const uint32_t num_eligible = static_cast<uint32_t>(eligible.size());
  plan.cpu_numa_node.resize(num_cpus);
  for (uint32_t c = 0; c < num_cpus; ++c) {
    uint32_t node = eligible[bucket_of(c, num_cpus, num_eligible)];
    plan.cpu_numa_node[c] = node;
    plan.nodes[node].supernode_cpus.push_back(c);
  }

  // 2. NPUs into dispatch threads, per supernode CPU in id order.
  std::vector<std::vector<dev::NpuId>> npus_of_cpu(num_cpus);
  for (size_t i = 0; i < supernode.npus.size(); ++i)
    npus_of_cpu[supernode.npus[i].near_cpu].push_back(static_cast<dev::NpuId>(i));
  plan.npus.resize(supernode.npus.size());
  std::vector<std::vector<uint32_t>> threads_of_node(num_nodes);
  for (uint32_t c = 0; c < num_cpus; ++c) {
    const std::vector<dev::NpuId>& npus = npus_of_cpu[c];
    for (size_t first = 0; first < npus.size(); first += options.npus_per_thread) {
      DispatchThreadPlan t;
      t.index = static_cast<uint32_t>(plan.threads.size());
      t.supernode_cpu = c;
      t.numa_node = plan.cpu_numa_node[c];
      size_t last = std::min(npus.size(), first + options.npus_per_thread);
      t.npus.assign(npus.begin() + static_cast<ptrdiff_t>(first),
                    npus.begin() + static_cast<ptrdiff_t>(last));
      for (dev::NpuId npu : t.npus) plan.npus[npu] = {c, t.numa_node, t.index};
      threads_of_node[t.numa_node].push_back(t.index);
      plan.threads.push_back(std::move(t));
    }
  }

  // 3. Threads of each node over its usable cores.
  bool limited = false;
  for (uint32_t node : eligible) {
    std::vector<uint32_t> usable = node_cores[node];
    if (options.cores_per_node > 0 && usable.size() > options.cores_per_node) {
      usable.resize(options.cores_per_node);
      limited = true;
    }
    const std::vector<uint32_t>& threads = threads_of_node[node];
    HostNodePlan& np = plan.nodes[node];
    np.num_threads = static_cast<uint32_t>(threads.size());
    if (threads.empty()) continue;
    std::vector<uint32_t> load(usable.size(), 0);
    for (size_t j = 0; j < threads.size(); ++j) {
      uint32_t k = bucket_of(j, threads.size(), usable.size());
      DispatchThreadPlan& t = plan.threads[threads[j]];
      t.core = usable[k];
      t.cpus = host.cores[t.core].cpus;
      ++load[k];
    }
    for (size_t k = 0; k < usable.size(); ++k)
      if (load[k] > 0) np.cores.push_back(usable[k]);
    np.max_threads_per_core = *std::max_element(load.begin(), load.end());
    for (uint32_t index : threads) {
      DispatchThreadPlan& t = plan.threads[index];
      size_t k = static_cast<size_t>(std::find(usable.begin(), usable.end(), t.core) - usable.begin());
      t.threads_on_core = load[k];
      if (load[k] > 1) plan.cores_shared = true;
    }
    plan.cores_used += static_cast<uint32_t>(np.cores.size());
  }

  // 4. What was done, for a person.
  uint32_t min_cpus = UINT32_MAX, max_cpus = 0, used_nodes = 0;
  for (uint32_t node : eligible) {
    uint32_t n = static_cast<uint32_t>(plan.nodes[node].supernode_cpus.size());
    min_cpus = std::min(min_cpus, n);
    max_cpus = std::max(max_cpus, n);
    if (n > 0) ++used_nodes;
  }
  if (num_cpus == 0) {
    plan.notes.push_back(strformat("supernode '%s' has no NPUs: no dispatch threads", supernode.name.c_str()));
  } else if (num_cpus >= num_eligible) {
    plan.notes.push_back(strformat("%s mapped onto %s (%s per node)",
                                   plural(num_cpus, "supernode CPU", "supernode CPUs").c_str(),
                                   plural(num_eligible, "host NUMA node", "host NUMA nodes").c_str(),
                                   range_text(min_cpus, max_cpus).c_str()));
  } else {
    plan.notes.push_back(strformat("%s spread over %s: one per node, %u node(s) unused",
                                   plural(num_cpus, "supernode CPU", "supernode CPUs").c_str(),
                                   plural(num_eligible, "host NUMA node", "host NUMA nodes").c_str(),
                                   num_eligible - used_nodes));
  }
  for (size_t n = 0; n < num_nodes; ++n) {
    if (!plan.nodes[n].eligible)
      plan.notes.push_back(strformat(
          "host NUMA node L#%zu (P#%u) has no cores of its own: no dispatch threads or staging "
          "buffers there", n, host.numa_nodes[n].os_index));
  }
  if (orphan_cores > 0)
    plan.notes.push_back(strformat("%s in no NUMA node: not used for dispatch",
                                   plural(orphan_cores, "host core", "host cores").c_str()));
  if (options.npus_per_thread > 1)
    plan.notes.push_back(strformat("%u NPUs per dispatch thread (RT_HOST_NPUS_PER_THREAD)",
                                   options.npus_per_thread));
  if (limited)
    plan.notes.push_back(strformat("dispatch threads use at most %u core(s) per host NUMA node "
                                   "(RT_HOST_CORES_PER_NODE)", options.cores_per_node));
  if (!plan.threads.empty()) {
    if (plan.cores_shared) {
      uint32_t max_load = 0;
      for (const HostNodePlan& np : plan.nodes) max_load = std::max(max_load, np.max_threads_per_core);
      plan.notes.push_back(strformat(
          "%s share %s (up to %u per core): fewer host cores than dispatch threads",
          plural(plan.threads.size(), "dispatch thread", "dispatch threads").c_str(),
          plural(plan.cores_used, "core", "cores").c_str(), max_load));
    } else {
      plan.notes.push_back(strformat("%s, each on a core of its own",
                                     plural(plan.threads.size(), "dispatch thread", "dispatch threads").c_str()));
    }
  }
  for (const std::string& note : plan.notes) MOE_INFO("placement: %s", note.c_str());
  return plan;
}

std::string PlacementPlan::to_json() const {
  JsonWriter w;
  w.begin_object();
  w.key("cpu_numa_node").begin_array();
  for (uint32_t n : cpu_numa_node) w.value(n);
  w.end_array();
  w.key("nodes").begin_array();
  for (const HostNodePlan& np : nodes) {
    w.begin_object();
    w.key("numa_node").value(np.numa_node);
    w.key("eligible").value(np.eligible);
    w.key("supernode_cpus").value(format_id_ranges(np.supernode_cpus));
    w.key("cores").value(format_id_ranges(np.cores));
    w.key("threads").value(np.num_threads);
    w.key("max_threads_per_core").value(np.max_threads_per_core);
    w.end_object();
  }
  w.end_array();
  w.key("threads").begin_array();
  for (const DispatchThreadPlan& t : threads) {
    w.begin_object();
    w.key("index").value(t.index);
    w.key("supernode_cpu").value(t.supernode_cpu);
    w.key("npus").value(format_id_ranges(t.npus));
    w.key("numa_node").value(t.numa_node);
    w.key("core").value(t.core);
    w.key("cpus").value(t.cpus.to_string());
    w.key("threads_on_core").value(t.threads_on_core);
    w.end_object();
  }
  w.end_array();
  w.key("cores_used").value(cores_used);
  w.key("cores_shared").value(cores_shared);
  w.key("notes").begin_array();
  for (const std::string& n : notes) w.value(n);
  w.end_array();
  w.end_object();
  return w.take();
}

std::string PlacementPlan::to_text(bool per_thread) const {
  std::string out = strformat("placement: %zu NPUs, %zu supernode CPUs, %zu dispatch threads on %u host cores\n",
                              npus.size(), cpu_numa_node.size(), threads.size(), cores_used);
  for (const HostNodePlan& np : nodes) {
    if (!np.eligible) {
      out += strformat("  NUMA L#%u: no cores, unused\n", np.numa_node);
      continue;
    }
    out += strformat("  NUMA L#%u: supernode CPUs %s, %u thread(s) on cores %s", np.numa_node,
                     format_id_ranges(np.supernode_cpus).c_str(), np.num_threads,
                     format_id_ranges(np.cores).c_str());
    if (np.max_threads_per_core > 1) out += strformat(" (up to %u per core)", np.max_threads_per_core);
    out += '\n';
  }
  for (const std::string& n : notes) out += "  note: " + n + "\n";
  if (per_thread) {
    for (const DispatchThreadPlan& t : threads) {
      std::string shared = t.threads_on_core > 1 ? strformat(" (shared by %u)", t.threads_on_core) : "";
      out += strformat("  thread %u: NPUs %s (CPU %u) -> NUMA L#%u, core %u, PUs %s%s\n", t.index,
                       format_id_ranges(t.npus).c_str(), t.supernode_cpu, t.numa_node, t.core,
                       t.cpus.to_string().c_str(), shared.c_str());
    }
  }
  return out;
}

}  // namespace moe::rt::host
