// The interconnect layer's options table (one per layer; environment override MOE_<NAME>).
// A transport reads them once, when it is opened (open_transport): changing one affects
// transports opened later. TransportOptions overrides a few per transport.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/base/options.h"

namespace moe::ic::options {

inline const opt::Option<std::string> kTransport{
    "interconnect", "IC_TRANSPORT", "",
    "transport to open (empty: the first in priority order that can serve the driver)"};

inline const opt::Option<int64_t> kMaxInlineBytes{
    "interconnect", "IC_MAX_INLINE_BYTES", 256,
    "largest put_inline (bytes copied from host memory at the call)"};

inline const opt::Option<int64_t> kCoalesceBytes{
    "interconnect", "IC_COALESCE_BYTES", 4096,
    "small puts to one destination NPU are buffered up to this many bytes and sent as one "
    "fabric operation (flushed earlier by fence, quiet, a signal or a get from that NPU)"};

inline const opt::Option<int64_t> kCoalesceMaxPutBytes{
    "interconnect", "IC_COALESCE_MAX_PUT_BYTES", 1024,
    "puts of at most this many bytes are coalesced; larger ones go out at once (0: never "
    "coalesce)"};

inline const opt::Option<int64_t> kMaxRetries{
    "interconnect", "IC_MAX_RETRIES", 8,
    "resends of one operation (lost or corrupted packets, plane down) before it fails"};

inline const opt::Option<double> kRetryDetectNs{
    "interconnect", "IC_RETRY_DETECT_NS", 1000.0,
    "modelled time from the end of a failed attempt until its resend can start (the "
    "negative acknowledgement or timeout that reports the loss), ns"};

inline const opt::Option<double> kDeviceIssueNs{
    "interconnect", "IC_DEVICE_ISSUE_NS", 2.0,
    "modelled cost for an NPU's issuing context to issue one operation (writing its "
    "descriptor or coalescing its bytes), ns: bounds the small-put rate of one context"};

inline const opt::Option<double> kHostIssueNs{
    "interconnect", "IC_HOST_ISSUE_NS", 1000.0,
    "modelled extra cost of an operation issued by the host for an NPU (doorbell write over "
    "the host link), ns"};

inline const opt::Option<int64_t> kWaitTimeoutMs{
    "interconnect", "IC_WAIT_TIMEOUT_MS", 10000,
    "default wall-clock limit of wait_until and barrier_wait before they return kTimeout"};

inline const opt::Option<int64_t> kCompletionTimeoutMs{
    "interconnect", "IC_COMPLETION_TIMEOUT_MS", 10000,
    "wall-clock limit for the driver to post the completions of work handed to it"};

inline const opt::Option<int64_t> kQueueDepth{
    "interconnect", "IC_QUEUE_DEPTH", 1024, "descriptors in an endpoint's fabric queue"};

inline const opt::Option<int64_t> kSignalTableWords{
    "interconnect", "IC_SIGNAL_TABLE_WORDS", 0,
    "signal words whose update times a transport remembers (for wait_until's modelled "
    "time); 0: sized from the machine, 2N^2 + 64N + 16384 for N NPUs (an EP-N dispatch "
    "buffer uses 2N^2 + N); beyond it waits keep the waiter's own clock and "
    "ic.signal_table_full counts"};

}  // namespace moe::ic::options
