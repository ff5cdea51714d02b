// The supernode's state as the protocol reports it (StatusReply.topology).
//
// Thread-safety: call on the engine thread (it queries the driver).
#pragma once

#include "runtime/runtime.h"
#include "tools/lib/protocol/messages.h"

namespace moe::daemon {

// Sizes from the topology; links down, planes down and NPUs lost from the driver's state now.
// A driver query that fails counts the element as healthy and is logged.
proto::TopologySummary summarize_topology(rt::Runtime& runtime);

}  // namespace moe::daemon
