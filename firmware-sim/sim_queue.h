// One engine queue of the simulated driver: a submission ring and a completion ring.
//
// A descriptor holds its slot from queue_submit until its completion is polled, so at most
// `depth` descriptors are pending or completed-but-unpolled at any time (a real engine
// stalls when its completion queue is full; the simulator refuses the submit instead).
// Storage grows with use, not with `depth`: a queue costs a few hundred bytes until work
// passes through it (a supernode has thousands of queues).
// Thread-safety: the submission side (ring, submitted, started, scratch) belongs to the one
// producer thread; the model fields (seq, last_end*) are touched under the driver's model
// lock; the completion ring is guarded by `mu`, so another thread may wait on it.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "runtime/device/driver.h"

namespace moe::sim {

// A descriptor as the ring keeps it: only the fields of its own kind (a WorkDescriptor
// carries all four kinds' fields; copying one kind's keeps queue_submit cheap).
struct QueuedWork {
  static constexpr size_t kBodyBytes =
      std::max({sizeof(dev::KernelWork), sizeof(dev::TransferWork), sizeof(dev::AtomicWork),
                sizeof(dev::HostCopyWork)});
  dev::WorkKind kind = dev::WorkKind::kMarker;
  uint64_t tag = 0;
  double not_before_ns = 0;
  alignas(8) unsigned char body[kBodyBytes];

  void store(const dev::WorkDescriptor& w) {
    kind = w.kind;
    tag = w.tag;
    not_before_ns = w.not_before.ns;
    switch (w.kind) {
      case dev::WorkKind::kKernel: std::memcpy(body, &w.kernel, sizeof(w.kernel)); break;
      case dev::WorkKind::kTransfer: std::memcpy(body, &w.transfer, sizeof(w.transfer)); break;
      case dev::WorkKind::kAtomic: std::memcpy(body, &w.atomic, sizeof(w.atomic)); break;
      case dev::WorkKind::kHostCopy: std::memcpy(body, &w.host_copy, sizeof(w.host_copy)); break;
      case dev::WorkKind::kMarker: break;
    }
  }
  // The stored struct (store() copied it there, which begins its lifetime: the work
  // structs are implicit-lifetime types). Precondition: T is the struct of `kind`.
  template <typename T>
  const T& get() const {
    return *std::launder(reinterpret_cast<const T*>(body));
  }
};

// Functional work decided under the model lock and performed after it.
struct QueueAction {
  enum class Kind : uint8_t { kCopy, kPartialCopy, kBody, kAtomic };
  Kind kind = Kind::kCopy;
  uint32_t completion = 0;  // index in the doorbell's batch
  uint8_t* dst = nullptr;
  const uint8_t* src = nullptr;
  uint64_t bytes = 0;
  uint32_t undelivered_begin = 0;  // kPartialCopy: packet indexes in the queue's scratch
  uint32_t undelivered_end = 0;
  const dev::TransferSegment* segments = nullptr;  // kCopy / kPartialCopy of a multi-segment
  uint32_t num_segments = 0;                       // transfer: dst, src are the NPUs' bases
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
  dev::AtomicOp op = dev::AtomicOp::kFetchAdd;
  uint64_t operand = 0;
  uint64_t compare = 0;
};

struct SimQueue {
  uint32_t id = 0;
  dev::NpuId npu = 0;
  uint32_t die = 0;
  dev::EngineKind engine = dev::EngineKind::kCompute;
  uint32_t depth = 0;

  // Submission side (producer thread).
  std::vector<QueuedWork> pending;  // [0, pending_count): submitted, not yet rung
  size_t pending_count = 0;
  std::atomic<uint32_t> in_use{0};
  std::vector<dev::Completion> batch;  // doorbell scratch
  std::vector<QueueAction> actions;
  std::vector<uint32_t> undelivered;
  uint64_t started = 0;  // descriptors handed to the engine, ever (the next work_index)
  // Per batch entry: its range in `undelivered` (empty when every packet arrived).
  std::vector<std::pair<uint32_t, uint32_t>> batch_lost;
  bool ringing = false;  // a doorbell of this queue is running (kernel bodies may not ring it)

  // Model state (under the driver's model lock).
  uint64_t seq = 0;             // fabric operations issued, for the fault draws
  double last_end_ns = 0;       // latest end of this queue's work
  std::vector<double> last_end_to_npu;  // fabric queues: latest transfer end per destination

  // Completion side.
  std::mutex mu;
  std::condition_variable cv;
  std::vector<dev::Completion> done;  // [done_head, size) not yet polled
  size_t done_head = 0;
  bool destroyed = false;
  uint64_t posted = 0;  // completions posted, ever
  uint64_t polled = 0;  // completions polled, ever
  // Undelivered packets of posted transfers (Driver::completion_undelivered), in work_index
  // order; records of polled completions are dropped at the next doorbell. Under `mu`.
  struct LostRecord {
    uint64_t work_index = 0;
    uint32_t begin = 0, end = 0;  // range in lost_log
  };
  std::vector<LostRecord> lost_records;
  std::vector<uint32_t> lost_log;
  uint64_t lost_floor = 0;  // work indexes below it are no longer held
};

}  // namespace moe::sim
