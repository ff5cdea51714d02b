// One NPU's physical HBM as the memory layer sees it: segments obtained from the driver,
// cut into frames of one global page each.
//
// A segment is reserved (hbm_reserve), committed (hbm_commit) and mapped for the host
// (hbm_map_host) in one go when the pool runs out of free frames, so HBM that is never used
// is never committed: a 384-NPU machine costs nothing until memory is asked for. Segments
// are MEM_SEGMENT_BYTES (the last one may be smaller, to end exactly at the NPU's limit).
// Each segment lives in a *slot* (0..max_slots-1): the slot is recorded in page-table
// entries and indexes this NPU's row of host deltas (host pointer minus device offset), so a
// host pointer is one load away from an entry.
//
// Frames are handed out lowest slot first and, in a segment, lowest frame first, which keeps
// use packed into few segments; a segment whose frames are all free is returned to the
// driver once more than MEM_RETAIN_SEGMENTS such segments are kept.
//
// Thread-safety: every function is thread-safe (one mutex per pool; driver calls are made
// under it: they do not block for long).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/device/driver.h"

namespace moe::mem {

struct Frame {
  uint32_t slot = 0;
  uint64_t device_page = 0;  // device offset >> page_shift
};

struct FramePoolConfig {
  uint32_t page_shift = 21;
  uint64_t segment_bytes = 0;  // multiple of the page
  uint64_t limit_bytes = 0;    // multiple of the page
  uint32_t retain_segments = 1;
  uint32_t max_slots = 0;
  bool poison_freed = false;
};

struct FramePoolSnapshot {
  uint64_t limit_bytes = 0;
  uint64_t committed_bytes = 0;
  uint64_t segments = 0;
  uint64_t free_frames = 0;  // in committed segments
  uint64_t used_frames = 0;
  uint64_t segments_created = 0;
  uint64_t segments_released = 0;
};

class FramePool {
 public:
  // `host_delta` is this NPU's row of max_slots host deltas, written by the pool and read
  // lock-free by translation. The driver outlives the pool.
  FramePool(dev::Driver* driver, dev::NpuId npu, const FramePoolConfig& config,
            std::atomic<intptr_t>* host_delta);
  ~FramePool();  // returns every segment to the driver
  FramePool(const FramePool&) = delete;
  FramePool& operator=(const FramePool&) = delete;

  // Appends `count` frames to *out, all or nothing. kOutOfMemory when the limit (or the
  // driver) leaves fewer; other driver errors (kNpuLost) as the driver reports them, with
  // this NPU named.
  Status allocate(uint64_t count, std::vector<Frame>* out);
  // Returns a frame. Precondition: it came from allocate() and is not free.
  void free(const Frame& frame);
  // Host pointer of a frame's first byte.
  void* host(const Frame& frame) const;

  // Frames that could be handed out now: free ones plus what the limit lets us commit.
  uint64_t available_frames() const;
  FramePoolSnapshot snapshot() const;
  dev::NpuId npu() const { return npu_; }

 private:
  struct Segment {
    dev::HbmRange range;
    char* host = nullptr;
    uint64_t first_page = 0;
    uint32_t num_frames = 0;
    std::vector<uint32_t> free_frames;  // indexes in the segment; popped from the back
    bool live = false;
  };
  Status add_segment_locked();
  void release_segment_locked(uint32_t slot);

  dev::Driver* const driver_;
  const dev::NpuId npu_;
  const FramePoolConfig config_;
  std::atomic<intptr_t>* const host_delta_;
  mutable std::mutex mu_;
  std::vector<Segment> segments_;  // by slot
  std::set<uint32_t> slots_with_free_;
  std::vector<uint32_t> unused_slots_;
  uint64_t committed_bytes_ = 0;
  uint64_t free_frames_ = 0;
  uint64_t used_frames_ = 0;
  uint32_t empty_segments_ = 0;
  uint64_t segments_created_ = 0;
  uint64_t segments_released_ = 0;
};

}  // namespace moe::mem
