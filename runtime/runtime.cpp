// Runtime: assembles driver, memory and transport, and tears them down in reverse order
// (members are declared driver, memory, transport, so the default member destruction order
// already does this; the destructor resets them explicitly to make the contract visible).
#include "runtime/runtime.h"

#include <condition_variable>
#include <utility>
#include <vector>

#include "firmware-sim/description.h"
#include "firmware-sim/sim_driver.h"
#include "interconnect/transport.h"
#include "memory/global_memory.h"
#include "runtime/base/check.h"
#include "runtime/base/json.h"
#include "runtime/base/log.h"
#include "runtime/base/stats.h"

namespace moe::rt {

StatusOr<std::unique_ptr<Runtime>> Runtime::open(const RuntimeOptions& options) {
  if (options.supernode.empty())
    return make_error(StatusCode::kInvalidArgument, "RuntimeOptions.supernode is empty");
  if (options.stream_depth < 2)
    return make_error(StatusCode::kInvalidArgument, "RuntimeOptions.stream_depth %u: must be >= 2",
                      options.stream_depth);
  MOE_TRY_ASSIGN(dev::Topology topology, sim::load_description(options.supernode));
  sim::SimConfig config;
  config.seed = options.seed;
  config.queue_depth = options.stream_depth;
  std::unique_ptr<Runtime> rt(new Runtime());
  rt->options_ = options;
  MOE_TRY_ASSIGN(rt->driver_, sim::create_driver(std::move(topology), config));
  const uint32_t depth_max = rt->driver_->caps().queue_depth_max;
  if (depth_max != 0 && options.stream_depth > depth_max)
    return make_error(StatusCode::kInvalidArgument,
                      "RuntimeOptions.stream_depth %u: the driver allows at most %u",
                      options.stream_depth, depth_max);
  MOE_TRY_ASSIGN(rt->memory_, mem::GlobalMemory::create(rt->driver_.get()));
  if (options.open_transport) {
    MOE_TRY_ASSIGN(rt->transport_, ic::open_transport(*rt->driver_, *rt->memory_));
  }
  MOE_TRY(rt->open_host());
  return rt;
}

Status Runtime::open_host() {
  const HostOptions& h = options_.host;
  if (!h.synthetic.empty() && !h.topology_xml.empty())
    return make_error(StatusCode::kInvalidArgument,
                      "HostOptions: give synthetic or topology_xml, not both");
  if (!h.synthetic.empty()) {
    MOE_TRY_ASSIGN(host_topology_, host::HostTopology::from_synthetic(h.synthetic));
  } else if (!h.topology_xml.empty()) {
    MOE_TRY_ASSIGN(host_topology_, host::HostTopology::from_xml_file(h.topology_xml));
  } else {
    MOE_TRY_ASSIGN(host_topology_, host::HostTopology::discover());
  }
  MOE_TRY_ASSIGN(placement_, host::plan_placement(topology(), host_topology_, h.placement));
  return Status();
}

const Status& Runtime::open_host_memory() {
  std::call_once(host_memory_once_, [this] {
    // The same host as host_topology_: its synthetic description, or the same XML file.
    mem::HostMemoryOptions memory_options;
    memory_options.synthetic = host_topology_.synthetic_description();
    memory_options.xml_file = options_.host.topology_xml;
    auto created = mem::HostMemory::create(memory_options);
    if (created.ok()) {
      host_memory_ = std::move(created).value();
    } else {
      host_memory_status_ = Status(created.status()).with_context("host memory for staging");
      MOE_WARN("runtime: %s", host_memory_status_.to_string().c_str());
    }
    host_memory_opened_.store(true, std::memory_order_release);
  });
  return host_memory_status_;
}

StatusOr<mem::StagingBuffer> Runtime::allocate_staging(dev::NpuId npu, size_t bytes) {
  if (npu >= placement_.npus.size())
    return make_error(StatusCode::kOutOfRange, "staging buffer for NPU %u: the supernode has %zu NPUs",
                      npu, placement_.npus.size());
  MOE_TRY(open_host_memory());
  return host_memory_->allocate_staging(bytes, placement_.npus[npu].numa_node);
}

StatusOr<host::DispatchThreadPool*> Runtime::dispatch_threads() {
  std::lock_guard<std::mutex> lock(dispatch_mu_);
  if (dispatch_ == nullptr) {
    host::DispatchPoolOptions pool_options;
    pool_options.bind = options_.host.bind_threads && host_topology_.is_this_system();
    MOE_TRY_ASSIGN(dispatch_, host::DispatchThreadPool::start(host_topology_, placement_,
                                                              pool_options));
    uint32_t bound = 0;
    for (const host::DispatchWorkerReport& w : dispatch_->workers()) bound += w.bound ? 1 : 0;
    MOE_INFO("runtime: %u dispatch threads started, %u bound to their planned cores%s",
             dispatch_->num_workers(), bound,
             host_topology_.is_this_system() ? "" : " (the host topology is not this system)");
  }
  return dispatch_.get();
}

Status Runtime::for_each_device(std::span<const dev::NpuId> npus,
                                const std::function<Status(dev::NpuId)>& fn) {
  if (host::DispatchThreadPool::on_dispatch_thread())
    return make_error(StatusCode::kFailedPrecondition,
                      "for_each_device called from a dispatch thread (it would wait for itself)");
  for (dev::NpuId npu : npus)
    if (npu >= num_devices())
      return make_error(StatusCode::kOutOfRange, "for_each_device: NPU %u of %u", npu,
                        num_devices());
  if (npus.empty()) return Status();
  MOE_TRY_ASSIGN(host::DispatchThreadPool * pool, dispatch_threads());
  // One task per worker, carrying its NPUs in the given order.
  std::vector<std::vector<uint32_t>> per_worker(pool->num_workers());
  for (uint32_t i = 0; i < npus.size(); ++i) {
    MOE_TRY_ASSIGN(uint32_t worker, pool->worker_of_npu(npus[i]));
    per_worker[worker].push_back(i);
  }
  std::vector<Status> results(npus.size());
  std::mutex mu;
  std::condition_variable done;
  size_t pending = 0;
  for (uint32_t w = 0; w < per_worker.size(); ++w) {
    if (per_worker[w].empty()) continue;
    {
      std::lock_guard<std::mutex> lock(mu);
      ++pending;
    }
    Status submitted = pool->submit(w, [&, w] {
      for (uint32_t i : per_worker[w]) results[i] = fn(npus[i]);
      std::lock_guard<std::mutex> lock(mu);
      if (--pending == 0) done.notify_all();
    });
    if (!submitted.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      --pending;
      for (uint32_t i : per_worker[w]) results[i] = submitted;
    }
  }
  std::unique_lock<std::mutex> lock(mu);
  done.wait(lock, [&] { return pending == 0; });
  for (const Status& s : results) MOE_TRY(s);
  return Status();
}

std::string Runtime::stats_json() {
  JsonWriter w;
  w.begin_object();
  w.key("supernode").value(topology().name);
  w.key("devices").value(num_devices());
  w.key("mode").value(functional() ? "functional" : "timing");
  w.key("memory").raw(memory_->stats_json());
  w.key("placement").begin_object();
  w.key("host_numa_nodes").value(static_cast<uint64_t>(placement_.nodes.size()));
  w.key("dispatch_threads").value(static_cast<uint64_t>(placement_.threads.size()));
  w.key("cores_used").value(placement_.cores_used);
  w.key("cores_shared").value(placement_.cores_shared);
  {
    std::lock_guard<std::mutex> lock(dispatch_mu_);
    w.key("threads_started").value(dispatch_ != nullptr);
  }
  w.key("host_memory_opened").value(host_memory_opened());
  w.end_object();
  w.key("counters").raw(stats::stats_to_json());
  w.end_object();
  return w.str();
}

Runtime::~Runtime() {
  if (dispatch_ != nullptr) dispatch_->shutdown().ignore();
  dispatch_.reset();
  host_memory_.reset();
  transport_.reset();
  memory_.reset();
  driver_.reset();
}

StatusOr<DeviceInfo> Runtime::device(dev::NpuId npu) const {
  const dev::Topology& t = topology();
  if (npu >= t.num_npus())
    return make_error(StatusCode::kOutOfRange, "device %u: the supernode %s has %u NPUs", npu,
                      t.name.c_str(), t.num_npus());
  const dev::NpuDesc& d = t.npus[npu];
  DeviceInfo info;
  info.npu = npu;
  info.node = d.node;
  info.index_in_node = d.index_in_node;
  info.near_cpu = d.near_cpu;
  info.dies = t.dies_per_npu;
  info.hbm_bytes = t.hbm.capacity_bytes;
  info.hbm_gbps = t.hbm.bandwidth_gbps;
  info.bf16_tflops_per_die = t.compute.bf16_tflops;
  info.fabric_gbps = t.npu_fabric_bandwidth_gbps(npu);
  return info;
}

}  // namespace moe::rt
