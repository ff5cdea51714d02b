// Exactly-once delivery over a lossy fabric queue (see reliable_queue.h).
//
// A run proceeds in rounds: round 0 is the items as given; each later round holds the
// resends decided while settling the previous one. Within a round, descriptors go to the
// driver in chunks of at most the queue depth, and each chunk's completions are settled
// before the next doorbell, because the driver keeps the list of a completion's undelivered
// packets only until then. Resend segments of round r live in segs_[r % 2] while round r+1's
// are built in the other vector, so no pointer handed to the driver moves while in use.
#include "interconnect/reliable_queue.h"

#include <algorithm>
#include <bit>

#include "runtime/base/check.h"
#include "runtime/base/clock.h"

namespace moe::ic {
namespace {

constexpr uint32_t kCallerSegments = ~0u;  // Attempt::seg_begin: segments owned by the caller

bool retryable(StatusCode code) {
  return code == StatusCode::kPacketLost || code == StatusCode::kPacketCorrupt ||
         code == StatusCode::kPlaneDown || code == StatusCode::kLinkDown;
}
bool path_down(StatusCode code) {
  return code == StatusCode::kPlaneDown || code == StatusCode::kLinkDown;
}

}  // namespace

ReliableQueue::~ReliableQueue() {
  if (driver_ != nullptr && queue_.valid()) driver_->queue_destroy(queue_).ignore();
}

Status ReliableQueue::open(dev::Driver& driver, dev::NpuId npu, uint32_t depth,
                           uint32_t max_retries, double retry_detect_ns,
                           int64_t completion_timeout_ns) {
  const dev::DriverCaps caps = driver.caps();
  depth = std::clamp<uint32_t>(depth, 1, std::max<uint32_t>(1, caps.queue_depth_max));
  MOE_TRY(driver.queue_create(npu, 0, dev::EngineKind::kFabric, depth, &queue_));
  driver_ = &driver;
  npu_ = npu;
  depth_ = depth;
  max_retries_ = max_retries;
  max_segments_ = caps.max_transfer_segments;
  packet_bytes_ = driver.topology().packet_bytes;
  num_planes_ = std::max<uint32_t>(1, driver.topology().num_planes);
  retry_detect_ns_ = retry_detect_ns;
  completion_timeout_ns_ = completion_timeout_ns;
  return ok_status();
}

Status ReliableQueue::run(std::span<FabricItem> items, ReliabilityCounts* counts) {
  MOE_ASSERT(driver_ != nullptr);
  uint32_t cur = 0;
  attempts_[0].clear();
  segs_[0].clear();
  for (uint32_t i = 0; i < items.size(); ++i) {
    FabricItem& it = items[i];
    it.status = StatusCode::kOk;
    it.end_ns = it.effect_ns = it.work.not_before.ns;
    it.atomic_old = 0;
    attempts_[0].push_back(Attempt{it.work, i, 0, kCallerSegments});
  }
  while (!attempts_[cur].empty()) {
    const uint32_t nxt = cur ^ 1u;
    attempts_[nxt].clear();
    segs_[nxt].clear();
    std::vector<Attempt>& round = attempts_[cur];
    for (Attempt& a : round)
      if (a.seg_begin != kCallerSegments)
        a.work.transfer.segments = segs_[cur].data() + a.seg_begin;
    for (size_t first = 0; first < round.size(); first += depth_) {
      const size_t n = std::min<size_t>(depth_, round.size() - first);
      submit_.resize(n);
      for (size_t k = 0; k < n; ++k) submit_[k] = round[first + k].work;
      MOE_TRY(driver_->queue_submit(queue_, submit_.data(), n));
      MOE_TRY(driver_->doorbell_ring(queue_));
      counts->fabric_ops += n;
      done_.resize(n);
      size_t got = 0;
      while (got < n) {
        size_t polled = 0;
        MOE_TRY(driver_->completions_poll(queue_, done_.data() + got, n - got, &polled));
        got += polled;
        if (got < n && polled == 0) {
          Status s = driver_->completions_wait(queue_, completion_timeout_ns_);
          if (!s.ok())
            return s.with_context(strformat("fabric queue of npu %u: %zu of %zu completions",
                                            npu_, got, n));
        }
      }
      for (size_t k = 0; k < n; ++k)
        MOE_TRY(settle(round[first + k], done_[k], items, &attempts_[nxt], &segs_[nxt], counts));
    }
    cur = nxt;
  }
  return ok_status();
}

Status ReliableQueue::settle(const Attempt& a, const dev::Completion& c,
                             std::span<FabricItem> items, std::vector<Attempt>* next,
                             std::vector<dev::TransferSegment>* next_segs,
                             ReliabilityCounts* counts) {
  FabricItem& it = items[a.item];
  it.end_ns = std::max(it.end_ns, c.end.ns);
  counts->packets_lost += c.packets_lost;
  counts->packets_corrupted += c.packets_corrupted;
  const double resend_at = c.end.ns + retry_detect_ns_;

  if (a.work.kind == dev::WorkKind::kAtomic) {
    if (c.status == StatusCode::kOk) {
      it.effect_ns = c.effect.ns;
      it.atomic_old = c.atomic_old;
      return ok_status();
    }
    if (!retryable(c.status) || a.tries >= max_retries_) {
      it.status = c.status;
      return ok_status();
    }
    // The request did not arrive, so the operation did not run: send it again, on the next
    // plane.
    Attempt r = a;
    r.tries = a.tries + 1;
    r.work.not_before = ModelTime{resend_at};
    r.work.atomic.plane = (a.work.atomic.plane + 1) % num_planes_;
    if (path_down(c.status)) ++counts->failovers;
    ++counts->retransmissions;
    ++counts->retransmitted_packets;
    next->push_back(r);
    return ok_status();
  }

  const dev::TransferWork& t = a.work.transfer;
  if (c.status == StatusCode::kOk) {
    counts->bytes_delivered += t.bytes;
    return ok_status();
  }
  if (!retryable(c.status)) {
    it.status = c.status;
    return ok_status();
  }
  const uint32_t undelivered = c.packets_lost + c.packets_corrupted;
  const bool nothing_sent = c.packets == 0;
  if (!nothing_sent) {
    lost_.resize(undelivered);
    size_t count = 0;
    MOE_TRY(driver_->completion_undelivered(queue_, c.work_index, lost_.data(), lost_.size(),
                                            &count));
    if (count != undelivered)
      return make_error(StatusCode::kInternal,
                        "fabric queue of npu %u: work %llu reports %u packets undelivered, the "
                        "driver lists %zu",
                        npu_, static_cast<unsigned long long>(c.work_index), undelivered, count);
    uint64_t lost_bytes = 0;
    for (uint32_t p : lost_)
      lost_bytes += std::min<uint64_t>(packet_bytes_, t.bytes - uint64_t{p} * packet_bytes_);
    counts->bytes_delivered += t.bytes - lost_bytes;
  }
  if (a.tries >= max_retries_) {
    it.status = c.status;
    return ok_status();
  }
  Attempt r = a;
  r.tries = a.tries + 1;
  r.work.not_before = ModelTime{resend_at};
  uint32_t mask = t.plane_mask;
  if (path_down(c.status) && (c.planes_failed & mask) != 0) {
    const uint32_t all = num_planes_ >= 32 ? ~0u : (1u << num_planes_) - 1;
    const uint32_t rest = mask & ~c.planes_failed & all;
    if (rest != 0) {
      mask = rest;
      ++counts->failovers;
    }
  }
  r.work.transfer.plane_mask = mask;
  if (nothing_sent) {  // no plane was usable: the whole transfer again, every plane allowed
    r.work.transfer.plane_mask = ~0u;
    ++counts->retransmissions;
    counts->retransmitted_packets += (t.bytes + packet_bytes_ - 1) / packet_bytes_;
    if (r.seg_begin != kCallerSegments) {  // its segments must move to the next round
      r.seg_begin = static_cast<uint32_t>(next_segs->size());
      next_segs->insert(next_segs->end(), t.segments, t.segments + t.num_segments);
    }
    next->push_back(r);
    return ok_status();
  }
  // Exactly the packets not delivered, as segments of the next round.
  const size_t begin = next_segs->size();
  lost_segments(t, lost_, next_segs);
  const size_t end = next_segs->size();
  counts->retransmitted_packets += undelivered;
  const size_t per = max_segments_ > 1 ? max_segments_ : 1;
  for (size_t s = begin; s < end; s += per) {
    const size_t n = std::min(per, end - s);
    Attempt part = r;
    dev::TransferWork& w = part.work.transfer;
    w.bytes = 0;
    for (size_t k = s; k < s + n; ++k) w.bytes += (*next_segs)[k].bytes;
    if (n == 1) {
      w.src.offset = (*next_segs)[s].src_offset;
      w.dst.offset = (*next_segs)[s].dst_offset;
      w.segments = nullptr;
      w.num_segments = 0;
      part.seg_begin = kCallerSegments;
    } else {
      w.segments = nullptr;  // set when the round is issued
      w.num_segments = static_cast<uint32_t>(n);
      part.seg_begin = static_cast<uint32_t>(s);
    }
    ++counts->retransmissions;
    next->push_back(part);
  }
  return ok_status();
}

void ReliableQueue::lost_segments(const dev::TransferWork& t, std::span<const uint32_t> lost,
                                  std::vector<dev::TransferSegment>* out) const {
  const uint64_t pb = packet_bytes_;
  const size_t first = out->size();
  uint32_t seg = 0;
  uint64_t seg_start = 0;  // stream offset of segment `seg`
  auto emit = [&](uint64_t begin, uint64_t end) {  // a stream range, increasing order
    if (t.num_segments == 0) {
      out->push_back({t.src.offset + begin, t.dst.offset + begin, end - begin});
      return;
    }
    while (begin < end && seg < t.num_segments) {
      const dev::TransferSegment& g = t.segments[seg];
      if (begin >= seg_start + g.bytes) {
        seg_start += g.bytes;
        ++seg;
        continue;
      }
      const uint64_t in = begin - seg_start;
      const uint64_t n = std::min(end, seg_start + g.bytes) - begin;
      dev::TransferSegment piece{g.src_offset + in, g.dst_offset + in, n};
      // Adjacent pieces of one segment (consecutive lost packets) merge.
      if (out->size() > first && out->back().src_offset + out->back().bytes == piece.src_offset &&
          out->back().dst_offset + out->back().bytes == piece.dst_offset)
        out->back().bytes += n;
      else
        out->push_back(piece);
      begin += n;
    }
  };
  for (size_t i = 0; i < lost.size();) {
    size_t j = i;
    while (j + 1 < lost.size() && lost[j + 1] == lost[j] + 1) ++j;
    const uint64_t begin = uint64_t{lost[i]} * pb;
    const uint64_t end = std::min<uint64_t>(t.bytes, (uint64_t{lost[j]} + 1) * pb);
    if (begin < end) emit(begin, end);
    i = j + 1;
  }
}

}  // namespace moe::ic
