// The runtime: one object that owns a supernode and presents its NPUs as one machine.
//
// Runtime::open() builds the supernode description (a preset name or a description file),
// the driver (the simulator, firmware-sim/), the global memory (memory/) and the transport
// (interconnect/), in that order, and destroys them in the reverse order. Work is launched
// through streams (stream.h), ordered across streams with events (event.h) and recorded
// once for replay with graphs (graph.h).
//
// Execution modes (DESIGN.md §4): in functional mode kernel bodies run; in timing mode only
// the cost model advances. The mode is chosen at open and applies to every stream.
//
// Host side (DESIGN.md §5 runtime): open() also loads the host topology (this machine by
// hwloc, or a synthetic / XML host for planning) and plans NUMA-affine placement
// (runtime/host/placement.h: which host NUMA node and core serve each NPU). Two things
// start on first use, so a runtime that never needs them pays nothing for them:
//  - host memory (memory/host_memory.h, its own hwloc topology: memory/ sits below runtime/
//    and cannot share runtime/host's) opens on the first allocate_staging(), which makes
//    staging buffers on the NUMA node nearest an NPU;
//  - dispatch threads, one per planned group of NPUs and bound to the planned core
//    (dispatch_threads(), for_each_device()).
//
// Thread-safety: the accessors are const and may be called from any thread; the owned
// objects keep their own contracts (driver.h, global_memory.h, transport.h).
// allocate_staging, dispatch_threads and for_each_device are thread-safe (the lazy starts
// happen once, under std::call_once / a mutex).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "memory/host_memory.h"
#include "runtime/base/status.h"
#include "runtime/device/driver.h"
#include "runtime/device/topology.h"
#include "runtime/host/dispatch_pool.h"
#include "runtime/host/host_topology.h"
#include "runtime/host/placement.h"

namespace moe::mem {
class GlobalMemory;
}
namespace moe::ic {
class Transport;
}

namespace moe::rt {

class Trace;

enum class ExecutionMode : uint8_t {
  kFunctional = 0,  // kernel bodies run (and the cost model advances)
  kTiming = 1,      // only the cost model advances; bodies are ignored
};

// Where the host side of the supernode runs.
struct HostOptions {
  std::string synthetic;     // plan for an hwloc synthetic host ("pack:2 numa:4 core:8");
  std::string topology_xml;  // or for an hwloc XML export; both empty: this host
  host::PlacementOptions placement = host::PlacementOptions::from_options();
  bool bind_threads = true;  // bind dispatch threads to their planned cores (this host only)
};

struct RuntimeOptions {
  std::string supernode = "cm384";  // preset name (cm384, n8, n16, n64) or description file
  uint64_t seed = 1;                // drives the simulator's injected faults
  ExecutionMode mode = ExecutionMode::kFunctional;
  uint32_t stream_depth = 1024;     // descriptors a stream's queue ring holds (>= 2)
  bool open_transport = true;       // false: no transport (memory and streams only)
  HostOptions host;
};

// One NPU as the runtime presents it.
struct DeviceInfo {
  dev::NpuId npu = dev::kInvalidId;
  uint32_t node = 0;            // the node (chassis) it sits in
  uint32_t index_in_node = 0;
  dev::CpuId near_cpu = 0;      // the host CPU it attaches to
  uint32_t dies = 0;            // compute dies: one compute stream engine each
  uint64_t hbm_bytes = 0;
  double hbm_gbps = 0;
  double bf16_tflops_per_die = 0;
  double fabric_gbps = 0;       // sum over planes, per direction
};

class Runtime {
 public:
  // kNotFound for an unknown supernode name or file (listing the presets), kInvalidArgument
  // for a bad option (naming it), and whatever the driver, memory or transport refused.
  static StatusOr<std::unique_ptr<Runtime>> open(const RuntimeOptions& options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const RuntimeOptions& options() const { return options_; }
  ExecutionMode mode() const { return options_.mode; }
  bool functional() const { return options_.mode == ExecutionMode::kFunctional; }

  dev::Driver& driver() const { return *driver_; }
  const dev::Topology& topology() const { return driver_->topology(); }
  mem::GlobalMemory& memory() const { return *memory_; }
  // Precondition: has_transport().
  ic::Transport& transport() const { return *transport_; }
  bool has_transport() const { return transport_ != nullptr; }

  uint32_t num_devices() const { return topology().num_npus(); }
  // kOutOfRange naming the NPU and the count for an unknown NPU.
  StatusOr<DeviceInfo> device(dev::NpuId npu) const;

  // ---- host side ----
  const host::HostTopology& host_topology() const { return host_topology_; }
  const host::PlacementPlan& placement() const { return placement_; }
  // `bytes` (> 0) of host memory on the NUMA node nearest `npu` (placement().npus[npu]).
  // The first call opens host memory (loads its topology; later calls wait for that and then
  // share it). kOutOfRange for an unknown NPU; host_memory.h's errors; when host memory
  // could not be opened, that error (prefixed "host memory for staging") on every call.
  // The runtime outlives the buffer.
  StatusOr<mem::StagingBuffer> allocate_staging(dev::NpuId npu, size_t bytes);
  // True once allocate_staging has opened host memory (successfully or not).
  bool host_memory_opened() const { return host_memory_opened_.load(std::memory_order_acquire); }
  // The dispatch threads, started on the first call (bound as planned; a binding refused by
  // the OS leaves a thread unbound and is reported in the pool's workers()).
  StatusOr<host::DispatchThreadPool*> dispatch_threads();
  // Runs fn(npu) for every NPU of `npus` on that NPU's dispatch thread (each thread takes
  // its NPUs in the given order, threads in parallel) and returns when all are done: the
  // first error in `npus` order, or OK. fn must be safe to call concurrently for different
  // NPUs (for instance: each NPU's own streams). kOutOfRange for an unknown NPU (nothing
  // runs); kFailedPrecondition when called from a dispatch thread (it would wait for itself).
  Status for_each_device(std::span<const dev::NpuId> npus,
                         const std::function<Status(dev::NpuId)>& fn);

  // Statistics of every layer as one JSON object: {"devices": N, "memory": {...},
  // "placement": {..., "threads_started", "host_memory_opened"}, "counters": {...}}
  // (counters: stats.h, every registered counter).
  std::string stats_json();

  // Attaches a trace (trace.h) that streams and graphs fill from now on; nullptr detaches.
  // Not owned: it outlives its attachment. Set while no stream is in use on another thread.
  void set_trace(Trace* trace) { trace_ = trace; }
  Trace* trace() const { return trace_; }

 private:
  Runtime() = default;
  // Loads the host topology and plans placement (open()'s last step).
  Status open_host();
  // Opens host_memory_ once (allocate_staging's first call); the outcome, kept.
  const Status& open_host_memory();
  RuntimeOptions options_;
  std::unique_ptr<dev::Driver> driver_;
  std::unique_ptr<mem::GlobalMemory> memory_;
  std::unique_ptr<ic::Transport> transport_;
  host::HostTopology host_topology_;
  host::PlacementPlan placement_;
  std::once_flag host_memory_once_;  // host_memory_ and its status are set once, inside it
  Status host_memory_status_;
  std::unique_ptr<mem::HostMemory> host_memory_;
  std::atomic<bool> host_memory_opened_{false};
  std::mutex dispatch_mu_;  // guards the lazy start of dispatch_
  std::unique_ptr<host::DispatchThreadPool> dispatch_;
  Trace* trace_ = nullptr;
};

}  // namespace moe::rt
