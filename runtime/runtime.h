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
// Thread-safety: the accessors are const and may be called from any thread; the owned
// objects keep their own contracts (driver.h, global_memory.h, transport.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/base/status.h"
#include "runtime/device/driver.h"
#include "runtime/device/topology.h"

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

struct RuntimeOptions {
  std::string supernode = "cm384";  // preset name (cm384, n8, n16, n64) or description file
  uint64_t seed = 1;                // drives the simulator's injected faults
  ExecutionMode mode = ExecutionMode::kFunctional;
  uint32_t stream_depth = 1024;     // descriptors a stream's queue ring holds (>= 2)
  bool open_transport = true;       // false: no transport (memory and streams only)
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

  // Attaches a trace (trace.h) that streams and graphs fill from now on; nullptr detaches.
  // Not owned: it outlives its attachment. Set while no stream is in use on another thread.
  void set_trace(Trace* trace) { trace_ = trace; }
  Trace* trace() const { return trace_; }

 private:
  Runtime() = default;
  RuntimeOptions options_;
  std::unique_ptr<dev::Driver> driver_;
  std::unique_ptr<mem::GlobalMemory> memory_;
  std::unique_ptr<ic::Transport> transport_;
  Trace* trace_ = nullptr;
};

}  // namespace moe::rt
