// Process-wide statistics of the interconnect layer (exported by stats_to_json() as "ic.*").
// Every endpoint adds what it did at quiet, fence, wait_until and when it is destroyed (not
// per operation, to keep atomics off the data path); per-endpoint figures, always current,
// are in Endpoint::stats().
#pragma once

#include "runtime/base/stats.h"

namespace moe::ic::stats_counters {

inline stats::Counter kPuts{"ic", "puts", "count", "put, put_inline and put_signal calls"};
inline stats::Counter kPutBytes{"ic", "put_bytes", "bytes", "bytes puts asked to move"};
inline stats::Counter kGets{"ic", "gets", "count", "get and get_nbi calls"};
inline stats::Counter kAtomics{"ic", "atomics", "count", "fetch_add and compare_swap calls"};
inline stats::Counter kSignals{"ic", "signals", "count", "signal word updates"};
inline stats::Counter kCoalescedPuts{"ic", "coalesced_puts", "count",
                                     "puts sent inside a coalesced fabric operation"};
inline stats::Counter kFabricOps{"ic", "fabric_ops", "count",
                                 "descriptors handed to the driver (resends included)"};
inline stats::Counter kBytesDelivered{"ic", "bytes_delivered", "bytes",
                                      "payload bytes that arrived, each counted once"};
inline stats::Counter kPacketsLost{"ic", "packets_lost", "count",
                                   "packets the fabric reported lost (drop, plane or link down)"};
inline stats::Counter kPacketsCorrupted{"ic", "packets_corrupted", "count",
                                        "packets that failed their checksum"};
inline stats::Counter kRetransmissions{"ic", "retransmissions", "count",
                                       "resend operations for packets not delivered"};
inline stats::Counter kRetransmittedPackets{"ic", "retransmitted_packets", "count",
                                            "packets carried by resends"};
inline stats::Counter kFailovers{"ic", "failovers", "count",
                                 "resends moved off a plane or link that went down"};
inline stats::Counter kErrors{"ic", "errors", "count", "operations that failed for good"};
inline stats::Counter kSignalTableFull{"ic", "signal_table_full", "count",
                                       "signal updates not recorded: the table was full"};

}  // namespace moe::ic::stats_counters
