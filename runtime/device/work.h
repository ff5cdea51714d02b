// What is submitted to an engine queue and what comes back.
//
// A WorkDescriptor is plain data copied into the queue's ring at submit time; the caller
// keeps nothing alive except what a kernel body's `ctx` points to (it must stay valid until
// the completion is polled). Every descriptor carries `not_before`: the modelled time its
// inputs are ready. An engine starts it at max(not_before, when the engine can take it), so
// dependencies across engines are expressed in modelled time, without a global event loop.
//
// Execution modes (docs/architecture.md): a kernel with a body, or a transfer with
// move_payload, does real work (functional mode); without, only the timing model advances
// (timing mode). The same descriptors serve both.
#pragma once

#include <cstdint>

#include "runtime/base/clock.h"
#include "runtime/base/status.h"
#include "runtime/device/topology.h"

namespace moe::dev {

enum class EngineKind : uint8_t {
  kCompute = 0,  // matrix and vector cores of one die
  kFabric = 1,   // the NPU's UB transfer engine: puts, gets, atomics to any NPU
  kHostCopy = 2, // copies between host memory and this NPU's HBM
};

// One byte of one NPU's HBM: the device-level address below the global address space.
struct DevicePtr {
  NpuId npu = kInvalidId;
  uint64_t offset = 0;
};

enum class KernelClass : uint8_t {
  kMatmul = 0,  // cost: max(flops / (rate * compute_eff), bytes / (hbm_bw * bandwidth_eff))
  kVector = 1,  // cost: max(flops / vector rate, bytes / hbm_bw)
};
enum class Precision : uint8_t { kBf16 = 0, kInt8 = 1, kFp32 = 2 };

struct KernelWork {
  double flops = 0;
  double hbm_bytes = 0;  // bytes read + written in HBM
  KernelClass kernel_class = KernelClass::kVector;
  Precision precision = Precision::kBf16;
  // Functional mode: called on the thread that rings the doorbell. Null in timing mode.
  void (*body)(void* ctx) = nullptr;
  void* ctx = nullptr;
};

// One piece of a multi-segment transfer: `bytes` from src.npu's HBM at src_offset to
// dst.npu's HBM at dst_offset.
struct TransferSegment {
  uint64_t src_offset = 0;
  uint64_t dst_offset = 0;
  uint64_t bytes = 0;
};

// Moves bytes from src to dst over the fabric (src and dst may be on any NPUs, the same NPU
// included). Packets are striped over the planes in plane_mask that are up.
//
// The transfer carries a *stream* of bytes cut into packets: packet i carries stream bytes
// [i * packet_bytes, (i + 1) * packet_bytes). For a plain transfer the stream is
// [src.offset, src.offset + bytes). A multi-segment transfer (num_segments > 0: coalesced
// small puts, or a resend of scattered packets) moves each segment between src.npu and
// dst.npu (src.offset and dst.offset are then ignored); the stream is the segments' bytes
// packed back to back in order, `bytes` must equal their sum, and each segment adds a
// sub-header of the driver's segment_header_bytes on the wire. Segments are written in
// order (a later one wins where two overlap at the destination). `segments` is owned by the
// caller and must stay valid until the completion is polled. At most
// DriverCaps::max_transfer_segments segments (0: the driver has no multi-segment transfers).
struct TransferWork {
  DevicePtr src;
  DevicePtr dst;
  uint64_t bytes = 0;
  uint32_t plane_mask = 0xffffffffu;
  bool move_payload = true;
  const TransferSegment* segments = nullptr;
  uint32_t num_segments = 0;
};

enum class AtomicOp : uint8_t {
  kFetchAdd = 0,     // *dst += operand; returns the old value
  kCompareSwap = 1,  // if *dst == compare then *dst = operand; returns the old value
  kStore = 2,        // *dst = operand, ordered after every earlier transfer of this queue
                     // to the same NPU (the signal of put-with-signal)
  kLoad = 3,         // returns *dst
};

// A 64-bit atomic on a naturally aligned word of HBM, performed at the destination.
struct AtomicWork {
  AtomicOp op = AtomicOp::kFetchAdd;
  DevicePtr dst;
  uint64_t operand = 0;
  uint64_t compare = 0;
  PlaneId plane = 0;  // the plane the request travels on
};

enum class CopyDirection : uint8_t { kHostToDevice = 0, kDeviceToHost = 1 };

struct HostCopyWork {
  void* host = nullptr;  // caller-owned, valid until the completion is polled
  DevicePtr device;
  uint64_t bytes = 0;
  CopyDirection direction = CopyDirection::kHostToDevice;
  bool move_payload = true;
};

enum class WorkKind : uint8_t { kKernel = 0, kTransfer = 1, kAtomic = 2, kHostCopy = 3, kMarker = 4 };

struct WorkDescriptor {
  WorkKind kind = WorkKind::kMarker;
  uint64_t tag = 0;        // returned in the completion, opaque to the driver
  ModelTime not_before{};  // inputs ready at this modelled time
  KernelWork kernel;       // kind == kKernel
  TransferWork transfer;   // kind == kTransfer
  AtomicWork atomic;       // kind == kAtomic
  HostCopyWork host_copy;  // kind == kHostCopy
};

struct Completion {
  uint64_t tag = 0;
  uint64_t work_index = 0;  // the descriptor's position in its queue: 0 for the first ever
                            // submitted (names it to Driver::completion_undelivered)
  StatusCode status = StatusCode::kOk;
  ModelTime start{};  // when the engine began the work
  ModelTime end{};    // when its effects were complete and visible at the destination; for
                      // an atomic, when its response (old value) is back at the issuer
  ModelTime effect{};  // when the work took effect at its destination: for an atomic, when
                       // it ran there (before the response travels back); otherwise `end`
  uint32_t packets = 0;            // packets sent, first attempts (transfers, atomics)
  uint32_t packets_lost = 0;       // dropped on the way, or sent on a plane that went down
  uint32_t packets_corrupted = 0;  // arrived with a bad checksum (the payload was not written)
                                   // (which packets: Driver::completion_undelivered)
  uint32_t planes_used = 0;        // bit mask of planes that carried packets
  uint32_t planes_failed = 0;      // bit mask of planes that lost packets
  uint64_t atomic_old = 0;         // atomics: the value before the operation
};

}  // namespace moe::dev
