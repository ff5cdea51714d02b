// One NPU's simulated HBM: device offsets backed lazily by host memory.
//
// Contract (the HBM half of dev::Driver, functions 4-8, for one NPU):
//  - Address space: on the first reserve the NPU maps `window` bytes of host address space
//    (MAP_NORESERVE, anonymous, private): no host memory is used until a page is written.
//    The window is the NPU's capacity unless options::kHbmVaWindowBytes lowers it.
//  - Reserve hands out ranges of device offsets (first fit, aligned); commit marks 4 KiB
//    pages usable (reading as zero); decommit drops their host pages (madvise DONTNEED, so
//    resident memory really falls); release decommits and returns the range.
//  - Committed pages are tracked in a sparse two-level bitmap (one 32 KiB leaf per GiB that
//    has committed pages), so a 128 GiB NPU costs ~1 KiB of tables until it is used.
//  - resident_bytes() asks the kernel (mincore) which committed pages have host memory.
//    Pages written through a host pointer after being decommitted are not counted (their
//    content is discarded again when they are committed).
// Thread-safety: every member function may be called from any thread (one mutex per NPU).
// The host mapping is never unmapped before destruction and is always read-write, so a
// stale pointer into a released range cannot crash the host (it is simply not HBM any more).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/device/driver.h"

namespace moe::sim {

inline constexpr uint64_t kHbmPageBytes = 4096;

class NpuHbm {
 public:
  // `capacity_bytes`: the NPU's nominal HBM; `window_bytes`: host address space to map for
  // it (0 or >= capacity: the capacity). Maps nothing yet.
  NpuHbm(dev::NpuId npu, uint64_t capacity_bytes, uint64_t window_bytes);
  ~NpuHbm();
  NpuHbm(const NpuHbm&) = delete;
  NpuHbm& operator=(const NpuHbm&) = delete;

  // See dev::Driver::hbm_reserve .. hbm_map_host. Errors name the NPU, offsets and sizes.
  Status reserve(uint64_t bytes, uint64_t alignment, dev::HbmRange* out);
  Status release(uint64_t offset, uint64_t bytes);
  Status commit(uint64_t offset, uint64_t bytes);
  Status decommit(uint64_t offset, uint64_t bytes);
  Status map_host(uint64_t offset, uint64_t bytes, void** host_ptr);

  // OK when every page of [offset, offset+bytes) is committed (bytes > 0); otherwise
  // kInvalidArgument naming the NPU and the first uncommitted offset. `what` prefixes the
  // message ("transfer source").
  Status check_committed(uint64_t offset, uint64_t bytes, const char* what) const;
  // Host address of a device offset. Precondition: the range was checked committed (so the
  // mapping exists).
  uint8_t* host_address(uint64_t offset) const { return base_ + offset; }

  uint64_t capacity_bytes() const { return capacity_bytes_; }
  uint64_t committed_bytes() const;
  uint64_t resident_bytes() const;

 private:
  static constexpr uint64_t kLeafBytes = 1ull << 30;  // device bytes per bitmap leaf
  static constexpr uint64_t kPagesPerLeaf = kLeafBytes / kHbmPageBytes;
  static constexpr uint64_t kWordsPerLeaf = kPagesPerLeaf / 64;
  struct Leaf {
    uint64_t words[kWordsPerLeaf] = {};
    uint64_t committed_pages = 0;
  };

  Status ensure_mapped_locked();
  // The reserved range holding [offset, offset+bytes), or an error naming the offset.
  Status find_reservation_locked(uint64_t offset, uint64_t bytes, const char* what) const;
  // Sets or clears pages [first, first+count); returns how many changed state. Newly
  // committed runs are first discarded (so they read as zero).
  uint64_t set_pages_locked(uint64_t first, uint64_t count, bool committed);
  void discard_host_pages(uint64_t first_page, uint64_t count) const;

  const dev::NpuId npu_;
  const uint64_t capacity_bytes_;
  const uint64_t window_bytes_;
  mutable std::mutex mu_;
  uint8_t* base_ = nullptr;                   // host mapping of [0, window_bytes_)
  std::map<uint64_t, uint64_t> free_;         // offset -> bytes, coalesced
  std::map<uint64_t, uint64_t> reserved_;     // offset -> bytes
  std::vector<std::unique_ptr<Leaf>> leaves_;  // one per GiB of the window, null when empty
  uint64_t committed_pages_ = 0;
};

}  // namespace moe::sim
