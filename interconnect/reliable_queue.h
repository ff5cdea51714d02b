// A fabric queue that delivers every byte exactly once: the reliability layer of the UB
// transport.
//
// run() hands a batch of transfers and atomics to the driver, collects their completions
// and resends what was not delivered until everything arrived or the attempts ran out:
//  - a transfer with lost or corrupted packets: exactly those packets are resent (asked of
//    the driver with completion_undelivered and mapped back onto the transfer's byte stream,
//    as one multi-segment transfer where the driver has them). When the loss came from a
//    plane or link going down, the resend leaves the failed planes out (a failover);
//  - a transfer that found no usable plane, or an atomic whose request was lost or
//    corrupted (it did not run), is sent again whole; an atomic moves to the next plane;
//  - kNpuLost, kHbmError and invalid work are final: no resend.
// A resend starts IC_RETRY_DETECT_NS (modelled) after the attempt that lost packets ended.
// Each item reports its final status, the modelled time its last byte arrived (`end`), when
// an atomic took effect at its destination (`effect`) and an atomic's old value.
//
// The driver's completions are waited for with a wall-clock limit (kTimeout), so a driver
// that never posts cannot hang the caller. Items' segments must stay valid during run().
// Not thread-safe: one owner (an endpoint). The data path allocates nothing once its
// scratch vectors have grown to the largest batch.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/device/driver.h"

namespace moe::ic {

struct FabricItem {
  dev::WorkDescriptor work;  // kTransfer or kAtomic, as first sent
  // ---- outcome ----
  StatusCode status = StatusCode::kOk;
  double end_ns = 0;
  double effect_ns = 0;
  uint64_t atomic_old = 0;
};

// What one run() did (added to by the caller into its statistics).
struct ReliabilityCounts {
  uint64_t fabric_ops = 0;
  uint64_t bytes_delivered = 0;
  uint64_t packets_lost = 0;
  uint64_t packets_corrupted = 0;
  uint64_t retransmissions = 0;
  uint64_t retransmitted_packets = 0;
  uint64_t failovers = 0;
};

class ReliableQueue {
 public:
  ReliableQueue() = default;
  ~ReliableQueue();
  ReliableQueue(const ReliableQueue&) = delete;
  ReliableQueue& operator=(const ReliableQueue&) = delete;

  // Creates the fabric queue of `npu`. `max_retries`: resends per item; `retry_detect_ns`:
  // modelled delay before a resend; `completion_timeout_ns`: wall limit per wait.
  Status open(dev::Driver& driver, dev::NpuId npu, uint32_t depth, uint32_t max_retries,
              double retry_detect_ns, int64_t completion_timeout_ns);

  // Runs `items` to their final outcome (see the header note). Returns an error only when
  // the driver refused the work or did not complete it in time (then items' outcomes are
  // unspecified); per-item failures are in the items.
  Status run(std::span<FabricItem> items, ReliabilityCounts* counts);

  dev::QueueId queue() const { return queue_; }

 private:
  // One descriptor handed to the driver: a first attempt or a resend of an item.
  struct Attempt {
    dev::WorkDescriptor work;
    uint32_t item = 0;
    uint32_t tries = 0;      // resends so far of this item
    uint32_t seg_begin = 0;  // resends: its segments in segs_[cur]
  };
  // Submits `attempts`, rings, collects their completions into done_.
  Status issue(std::vector<Attempt>& attempts);
  // Decides the outcome of attempt a with completion c; appends resends to next.
  Status settle(const Attempt& a, const dev::Completion& c, std::span<FabricItem> items,
                std::vector<Attempt>* next, std::vector<dev::TransferSegment>* next_segs,
                ReliabilityCounts* counts);
  // Appends to `out` the segments of the stream ranges of `t` covered by the sorted packet
  // indexes `lost`.
  void lost_segments(const dev::TransferWork& t, std::span<const uint32_t> lost,
                     std::vector<dev::TransferSegment>* out) const;

  dev::Driver* driver_ = nullptr;
  dev::QueueId queue_;
  dev::NpuId npu_ = dev::kInvalidId;
  uint32_t depth_ = 0;
  uint32_t max_retries_ = 0;
  uint32_t max_segments_ = 0;
  uint32_t packet_bytes_ = 0;
  uint32_t num_planes_ = 0;
  double retry_detect_ns_ = 0;
  int64_t completion_timeout_ns_ = 0;
  // Scratch, reused across runs.
  std::vector<Attempt> attempts_[2];
  std::vector<dev::TransferSegment> segs_[2];
  std::vector<dev::WorkDescriptor> submit_;
  std::vector<dev::Completion> done_;
  std::vector<uint32_t> lost_;
};

}  // namespace moe::ic
