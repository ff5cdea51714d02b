// Segments live in slots; a free slot list recycles them after release. Free frames are
// kept per segment (a stack of indexes, lowest on top) and the set of slots that have any,
// so allocation walks from the lowest slot. Invariants: free_frames_ is the sum of the
// segments' stacks; empty_segments_ counts live segments whose every frame is free.
#include "memory/frame_pool.h"

#include <algorithm>
#include <cstring>

#include "memory/page_table.h"

#include "runtime/base/check.h"
#include "runtime/base/log.h"

namespace moe::mem {

FramePool::FramePool(dev::Driver* driver, dev::NpuId npu, const FramePoolConfig& config,
                     std::atomic<intptr_t>* host_delta)
    : driver_(driver), npu_(npu), config_(config), host_delta_(host_delta) {}

FramePool::~FramePool() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& seg : segments_) {
    if (!seg.live) continue;
    Status s = driver_->hbm_release(seg.range);
    if (!s.ok()) MOE_WARN("npu %u: releasing a segment at exit: %s", npu_, s.to_string().c_str());
    seg.live = false;
  }
}

Status FramePool::add_segment_locked() {
  const uint64_t page_bytes = uint64_t{1} << config_.page_shift;
  const uint64_t headroom = config_.limit_bytes - committed_bytes_;
  const uint64_t bytes = std::min(config_.segment_bytes, headroom) & ~(page_bytes - 1);
  if (bytes == 0) {
    return make_error(StatusCode::kOutOfMemory,
                      "npu %u: the memory layer's limit of %llu bytes is committed", npu_,
                      static_cast<unsigned long long>(config_.limit_bytes));
  }
  uint32_t slot;
  if (!unused_slots_.empty()) {
    slot = unused_slots_.back();
  } else if (segments_.size() < config_.max_slots) {
    slot = static_cast<uint32_t>(segments_.size());
  } else {
    return make_error(StatusCode::kOutOfMemory, "npu %u: all %u segment slots are in use", npu_,
                      config_.max_slots);
  }
  dev::HbmRange range;
  Status s = driver_->hbm_reserve(npu_, bytes, page_bytes, &range);
  if (!s.ok()) return s.with_context(strformat("npu %u: reserving a %s segment", npu_,
                                               format_bytes(double(bytes)).c_str()));
  s = driver_->hbm_commit(npu_, range.offset, range.bytes);
  void* host = nullptr;
  if (s.ok()) s = driver_->hbm_map_host(npu_, range.offset, range.bytes, &host);
  const uint64_t first_page = range.offset >> config_.page_shift;
  if (s.ok() && (range.offset & (page_bytes - 1)) != 0) {
    s = make_error(StatusCode::kInternal, "npu %u: driver returned a segment at offset %llu, "
                   "not aligned to the page", npu_, static_cast<unsigned long long>(range.offset));
  }
  if (s.ok() && first_page + (bytes >> config_.page_shift) > page_entry::kMaxDevicePages) {
    s = make_error(StatusCode::kUnsupported, "npu %u: device offset %llu beyond what a page "
                   "entry encodes", npu_, static_cast<unsigned long long>(range.offset));
  }
  if (!s.ok()) {
    driver_->hbm_release(range).ignore();
    return s.with_context(strformat("npu %u: committing a segment", npu_));
  }
  if (!unused_slots_.empty()) unused_slots_.pop_back();
  if (slot == segments_.size()) segments_.emplace_back();
  Segment& seg = segments_[slot];
  seg.range = range;
  seg.host = static_cast<char*>(host);
  seg.first_page = first_page;
  seg.num_frames = static_cast<uint32_t>(bytes >> config_.page_shift);
  seg.free_frames.clear();
  seg.free_frames.reserve(seg.num_frames);
  for (uint32_t i = seg.num_frames; i-- > 0;) seg.free_frames.push_back(i);
  seg.live = true;
  // Published before any entry naming this slot (those are stored with release later).
  host_delta_[slot].store(reinterpret_cast<intptr_t>(host) - static_cast<intptr_t>(range.offset),
                          std::memory_order_release);
  committed_bytes_ += bytes;
  free_frames_ += seg.num_frames;
  ++empty_segments_;
  ++segments_created_;
  slots_with_free_.insert(slot);
  MOE_DEBUG("npu %u: segment slot %u at offset %llu, %s", npu_, slot,
            static_cast<unsigned long long>(range.offset), format_bytes(double(bytes)).c_str());
  return ok_status();
}

void FramePool::release_segment_locked(uint32_t slot) {
  Segment& seg = segments_[slot];
  MOE_ASSERT(seg.live && seg.free_frames.size() == seg.num_frames);
  Status s = driver_->hbm_release(seg.range);
  if (!s.ok()) MOE_WARN("npu %u: releasing segment slot %u: %s", npu_, slot, s.to_string().c_str());
  host_delta_[slot].store(0, std::memory_order_release);
  committed_bytes_ -= seg.range.bytes;
  free_frames_ -= seg.num_frames;
  --empty_segments_;
  ++segments_released_;
  slots_with_free_.erase(slot);
  seg.live = false;
  seg.free_frames.clear();
  seg.free_frames.shrink_to_fit();
  unused_slots_.push_back(slot);
}

Status FramePool::allocate(uint64_t count, std::vector<Frame>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t page_bytes = uint64_t{1} << config_.page_shift;
  const uint64_t headroom_frames = (config_.limit_bytes - committed_bytes_) / page_bytes;
  if (count > free_frames_ + headroom_frames) {
    return make_error(StatusCode::kOutOfMemory,
                      "npu %u: %llu pages asked, %llu free and %llu more within the limit", npu_,
                      static_cast<unsigned long long>(count),
                      static_cast<unsigned long long>(free_frames_),
                      static_cast<unsigned long long>(headroom_frames));
  }
  while (free_frames_ < count) {
    Status s = add_segment_locked();
    if (!s.ok()) return s;  // segments added so far stay, free, for the next request
  }
  out->reserve(out->size() + count);
  for (uint64_t n = 0; n < count; ++n) {
    MOE_ASSERT(!slots_with_free_.empty());
    const uint32_t slot = *slots_with_free_.begin();
    Segment& seg = segments_[slot];
    if (seg.free_frames.size() == seg.num_frames) --empty_segments_;
    const uint32_t index = seg.free_frames.back();
    seg.free_frames.pop_back();
    if (seg.free_frames.empty()) slots_with_free_.erase(slot);
    out->push_back(Frame{slot, seg.first_page + index});
  }
  free_frames_ -= count;
  used_frames_ += count;
  return ok_status();
}

void FramePool::free(const Frame& frame) {
  std::lock_guard<std::mutex> lock(mu_);
  MOE_ASSERT(frame.slot < segments_.size());
  Segment& seg = segments_[frame.slot];
  MOE_ASSERT(seg.live && frame.device_page >= seg.first_page &&
             frame.device_page < seg.first_page + seg.num_frames);
  const uint32_t index = static_cast<uint32_t>(frame.device_page - seg.first_page);
  if (config_.poison_freed) {
    std::memset(seg.host + (uint64_t{index} << config_.page_shift), 0xDB,
                uint64_t{1} << config_.page_shift);
  }
  if (seg.free_frames.empty()) slots_with_free_.insert(frame.slot);
  seg.free_frames.push_back(index);
  ++free_frames_;
  --used_frames_;
  if (seg.free_frames.size() == seg.num_frames) {
    ++empty_segments_;
    if (empty_segments_ > config_.retain_segments) release_segment_locked(frame.slot);
  }
}

void* FramePool::host(const Frame& frame) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Segment& seg = segments_[frame.slot];
  return seg.host + ((frame.device_page - seg.first_page) << config_.page_shift);
}

uint64_t FramePool::available_frames() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_frames_ + ((config_.limit_bytes - committed_bytes_) >> config_.page_shift);
}

FramePoolSnapshot FramePool::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  FramePoolSnapshot s;
  s.limit_bytes = config_.limit_bytes;
  s.committed_bytes = committed_bytes_;
  for (const auto& seg : segments_) s.segments += seg.live ? 1 : 0;
  s.free_frames = free_frames_;
  s.used_frames = used_frames_;
  s.segments_created = segments_created_;
  s.segments_released = segments_released_;
  return s;
}

}  // namespace moe::mem
