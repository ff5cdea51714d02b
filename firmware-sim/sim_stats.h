// Process-wide statistics of the hardware layer (exported by stats_to_json() as "sim.*").
// Every simulated driver in the process adds to them; the driver adds once per doorbell.
#pragma once

#include "runtime/base/stats.h"

namespace moe::sim::stats_counters {

inline stats::Counter kTransfers{"sim", "transfers", "count", "fabric transfers completed"};
inline stats::Counter kPackets{"sim", "packets", "count",
                               "fabric packets sent (first attempts, atomics included)"};
inline stats::Counter kPacketsLost{"sim", "packets_lost", "count",
                                   "packets dropped or sent on a plane or link that was down: "
                                   "the transport must resend them"};
inline stats::Counter kPacketsCorrupted{"sim", "packets_corrupted", "count",
                                        "packets that arrived with a bad checksum (not written)"};
inline stats::Counter kAtomics{"sim", "atomics", "count", "atomic operations completed"};
inline stats::Counter kKernels{"sim", "kernels", "count", "kernels completed"};
inline stats::Counter kHostCopies{"sim", "host_copies", "count", "host copies completed"};
inline stats::Counter kFailedOperations{"sim", "failed_operations", "count",
                                        "operations completed with an error status"};

}  // namespace moe::sim::stats_counters
