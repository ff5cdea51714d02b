// Traces: a Chrome trace JSON (opens in Perfetto, chrome://tracing) of a run.
//
// Two kinds of lanes, never mixed: modelled-time lanes, one process per NPU and one thread
// per engine ("compute die 0"), filled from the completions that streams poll (start, end in
// modelled ns); and wall-time lanes, one process "host (wall)" with one thread per host
// thread, filled with what the runtime spent on the host (launches, graph replays). In the
// file, "ts" and "dur" are microseconds as the format wants; each lane's clock is named in
// its process name.
//
// Attach with Runtime::set_trace(&trace) before launching; streams then record every
// completion they poll and every launch/replay on the host. Tracing costs a mutex and a
// clock read per event; without a trace attached the launch path does not touch it.
//
// Thread-safety: add_* may be called from any thread; to_json/write while nothing adds.
// Names are copied.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "runtime/base/clock.h"
#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::rt {

class Trace {
 public:
  // A span of modelled time on one engine of one NPU (`lane`, e.g. "compute die 0").
  void add_device_span(dev::NpuId npu, std::string_view lane, std::string_view name,
                       ModelTime start, ModelTime end);
  // A span of wall time on the calling host thread.
  void add_host_span(std::string_view name, int64_t start_wall_ns, int64_t end_wall_ns);

  size_t num_device_spans() const;
  size_t num_host_spans() const;
  // The whole trace: {"traceEvents":[...],"displayTimeUnit":"ns"}, lanes named by
  // metadata events.
  std::string to_json() const;
  // Writes to_json() to `path`. kNotFound / kInvalidArgument naming the path and the
  // system's reason.
  Status write(const std::string& path) const;

 private:
  struct DeviceSpan {
    dev::NpuId npu;
    uint32_t lane;  // index in lanes_
    std::string name;
    ModelTime start, end;
  };
  struct HostSpan {
    uint32_t thread;  // index in threads_
    std::string name;
    int64_t start_wall_ns, end_wall_ns;
  };
  mutable std::mutex mu_;
  std::vector<std::string> lanes_;
  std::vector<std::thread::id> threads_;
  std::vector<DeviceSpan> device_spans_;
  std::vector<HostSpan> host_spans_;
};

}  // namespace moe::rt
