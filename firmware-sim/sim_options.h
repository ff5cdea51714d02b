// The hardware layer's options table (firmware-sim). Every entry can be overridden from the
// environment as MOE_<NAME> or with opt::set_option(); `moe info --config` lists them.
// A driver reads these once, in create_driver(): changing one affects drivers created later.
#pragma once

#include <cstdint>

#include "runtime/base/options.h"

namespace moe::sim::options {

inline const opt::Option<int64_t> kHbmVaWindowBytes{
    "sim", "SIM_HBM_VA_WINDOW_BYTES", 0,
    "host address space reserved per NPU for its simulated HBM (0: the NPU's nominal "
    "capacity). Lower it when the host cannot map capacity x NPUs; reservations beyond the "
    "window then fail with kOutOfMemory"};

inline const opt::Option<int64_t> kQueueDepthMax{
    "sim", "SIM_QUEUE_DEPTH_MAX", 65536, "largest ring a queue may ask for (descriptors)"};

inline const opt::Option<double> kFabricIssueNs{
    "sim", "SIM_FABRIC_ISSUE_NS", 10.0,
    "modelled cost for an NPU's fabric engine to issue one descriptor (ns); the engine "
    "keeps many transfers in flight, this only spaces their starts"};

inline const opt::Option<int64_t> kMaxTransferSegments{
    "sim", "SIM_MAX_TRANSFER_SEGMENTS", 4096,
    "segments one multi-segment transfer may carry (DriverCaps::max_transfer_segments)"};

inline const opt::Option<int64_t> kSegmentHeaderBytes{
    "sim", "SIM_SEGMENT_HEADER_BYTES", 8,
    "wire bytes each segment of a multi-segment transfer adds (the sub-header naming its "
    "destination address and length)"};

inline const opt::Option<double> kAtomicPayloadBytes{
    "sim", "SIM_ATOMIC_PAYLOAD_BYTES", 16.0,
    "payload bytes of an atomic request or response packet (the header comes on top)"};

inline const opt::Option<double> kLocalAtomicNs{
    "sim", "SIM_LOCAL_ATOMIC_NS", 100.0,
    "modelled cost of an atomic whose target word is in the issuing NPU's own HBM, ns"};

inline const opt::Option<double> kHostCopyLatencyNs{
    "sim", "SIM_HOST_COPY_LATENCY_NS", 1000.0,
    "fixed modelled cost of one host <-> HBM copy (DMA set-up and completion), ns"};

inline const opt::Option<double> kVectorRateFraction{
    "sim", "SIM_VECTOR_RATE_FRACTION", 0.0625,
    "rate of a die's vector cores as a fraction of its BF16 matrix rate"};

inline const opt::Option<double> kFp32RateFraction{
    "sim", "SIM_FP32_RATE_FRACTION", 0.25,
    "FP32 matrix rate as a fraction of the BF16 matrix rate"};

}  // namespace moe::sim::options
