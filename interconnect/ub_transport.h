// The Unified Bus transport: the Transport implementation over a dev::Driver's fabric
// queues (on the simulator, the simulated UB fabric). open_transport() finds it by name
// "ub"; these two functions are its entry in the priority list (transport.cpp).
//
// What it adds to the driver's fabric engine:
//  - operations on global addresses, split at global-page boundaries;
//  - coalescing: puts of at most IC_COALESCE_MAX_PUT_BYTES whose source is on the issuing
//    NPU (and every put_inline, whose bytes are staged in a per-destination buffer of the
//    issuing NPU's HBM) are buffered per destination NPU and sent as one multi-segment
//    transfer (adjacent ranges merge into one segment) when the buffer would pass
//    IC_COALESCE_BYTES, or at fence, quiet, a signal to that NPU, a get from it, a large put
//    to it, or any blocking wait;
//  - exactly-once delivery with resend and plane failover (reliable_queue.h);
//  - modelled clocks per endpoint and signal visibility times (signal_table.h);
//  - barriers over groups.
// The driver stripes each transfer's packets over the planes that are up.
#pragma once

#include <memory>
#include <string>

#include "interconnect/transport.h"
#include "runtime/base/status.h"

namespace moe::ic {

// Whether the UB transport can serve this driver (it needs fabric planes and packets);
// when not, *why says what is missing.
bool ub_can_serve(const dev::Driver& driver, std::string* why);

StatusOr<std::unique_ptr<Transport>> open_ub_transport(dev::Driver& driver,
                                                       mem::GlobalMemory& memory,
                                                       const TransportOptions& options);

}  // namespace moe::ic
