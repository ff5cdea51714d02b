// What moed's requests do on the engine thread: each function takes a decoded request and
// returns the reply body (an ErrorReply on failure), and runs on the engine thread
// (EngineExecutor) with the context it was handed. Streaming generation is not here: it
// needs the connection (server.cpp).
#pragma once

#include <cstdint>

#include "tools/lib/daemon/engine_executor.h"
#include "tools/lib/protocol/messages.h"

namespace moe::daemon {

// The io thread's side of the metrics, snapshotted when the request arrived.
struct DaemonCounters {
  double uptime_s = 0;
  uint32_t connections_open = 0;
  uint64_t connections_total = 0;
  uint64_t connections_refused_total = 0;  // uid not allowed, too many connections
  uint64_t requests_total = 0;
  uint64_t errors_total = 0;               // ErrorReplies sent
  uint64_t busy_total = 0;                 // refused for a full engine queue
  uint64_t timeouts_total = 0;
  uint64_t bad_frames_total = 0;           // header or payload errors
  uint32_t active_requests = 0;
  uint32_t queued_jobs = 0;
  bool draining = false;
};

// StatusReply `base` (the daemon's fields) completed with the models and, when asked, the
// topology.
proto::Body status_job(EngineContext& context, proto::StatusReply base, bool include_topology);
proto::Body load_job(EngineContext& context, const proto::LoadRequest& request);
proto::Body unload_job(EngineContext& context, const proto::UnloadRequest& request);
proto::Body metrics_job(EngineContext& context, const DaemonCounters& counters,
                        proto::MetricsFormat format);
// Injects or clears a fault on the driver (FaultReply / Ack). kInvalidArgument for a
// target past the topology's links, planes or NPUs, or a rate outside (0, 1].
proto::Body fault_job(EngineContext& context, const proto::FaultRequest& request);

}  // namespace moe::daemon
