// Lazy HBM of one NPU.
//
// Design: the host mapping is one MAP_NORESERVE anonymous region per NPU made on first use;
// the kernel backs a page only when it is written, so reserving and committing cost nothing
// but table entries. Reservations are a first-fit allocator over device offsets (two ordered
// maps: free ranges kept coalesced, and the reserved ranges, so release can check it gets a
// whole range back). Commitment is a bitmap at 4 KiB grain split in 1 GiB leaves allocated
// on demand. Commit discards the host pages of newly committed runs before marking them, so
// committed memory always reads as zero even if a stale host pointer wrote there.
// Invariant: committed pages lie inside reserved ranges; free_ and reserved_ partition
// [0, window) with no overlap.
#include "firmware-sim/hbm.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "runtime/base/check.h"

namespace moe::sim {
namespace {

bool page_aligned(uint64_t v) { return v % kHbmPageBytes == 0; }
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace

NpuHbm::NpuHbm(dev::NpuId npu, uint64_t capacity_bytes, uint64_t window_bytes)
    : npu_(npu),
      capacity_bytes_(capacity_bytes / kHbmPageBytes * kHbmPageBytes),
      window_bytes_(window_bytes == 0 || window_bytes >= capacity_bytes_
                        ? capacity_bytes_
                        : window_bytes / kHbmPageBytes * kHbmPageBytes) {
  if (window_bytes_ > 0) free_.emplace(0, window_bytes_);
  leaves_.resize((window_bytes_ + kLeafBytes - 1) / kLeafBytes);
}

NpuHbm::~NpuHbm() {
  if (base_ != nullptr) munmap(base_, window_bytes_);
}

Status NpuHbm::ensure_mapped_locked() {
  if (base_ != nullptr) return ok_status();
  void* p = mmap(nullptr, window_bytes_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    return make_error(StatusCode::kOutOfMemory,
                      "npu %u: cannot map %s of host address space for its simulated HBM (%s); "
                      "set MOE_SIM_HBM_VA_WINDOW_BYTES to a smaller window",
                      npu_, format_bytes(static_cast<double>(window_bytes_)).c_str(),
                      std::strerror(err));
  }
  base_ = static_cast<uint8_t*>(p);
  return ok_status();
}

Status NpuHbm::reserve(uint64_t bytes, uint64_t alignment, dev::HbmRange* out) {
  if (bytes == 0 || !page_aligned(bytes))
    return make_error(StatusCode::kInvalidArgument,
                      "npu %u: hbm_reserve of %llu bytes: size must be a non-zero multiple of "
                      "4096",
                      npu_, static_cast<unsigned long long>(bytes));
  if (alignment < kHbmPageBytes || !std::has_single_bit(alignment))
    return make_error(StatusCode::kInvalidArgument,
                      "npu %u: hbm_reserve alignment %llu must be a power of two >= 4096", npu_,
                      static_cast<unsigned long long>(alignment));
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t largest = 0;
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    uint64_t start = it->first, len = it->second;
    largest = std::max(largest, len);
    uint64_t aligned = align_up(start, alignment);
    if (aligned < start || aligned - start >= len || len - (aligned - start) < bytes) continue;
    MOE_TRY(ensure_mapped_locked());
    // Carve [aligned, aligned+bytes) out of [start, start+len).
    free_.erase(it);
    if (aligned > start) free_.emplace(start, aligned - start);
    uint64_t tail = start + len - (aligned + bytes);
    if (tail > 0) free_.emplace(aligned + bytes, tail);
    reserved_.emplace(aligned, bytes);
    *out = dev::HbmRange{npu_, aligned, bytes};
    return ok_status();
  }
  return make_error(StatusCode::kOutOfMemory,
                    "npu %u: no free HBM range of %s aligned to %llu (capacity %s%s, largest "
                    "free range %s)",
                    npu_, format_bytes(static_cast<double>(bytes)).c_str(),
                    static_cast<unsigned long long>(alignment),
                    format_bytes(static_cast<double>(capacity_bytes_)).c_str(),
                    window_bytes_ < capacity_bytes_
                        ? strformat(", host window %s",
                                    format_bytes(static_cast<double>(window_bytes_)).c_str())
                              .c_str()
                        : "",
                    format_bytes(static_cast<double>(largest)).c_str());
}

Status NpuHbm::release(uint64_t offset, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = reserved_.find(offset);
  if (it == reserved_.end() || it->second != bytes)
    return make_error(StatusCode::kInvalidArgument,
                      "npu %u: hbm_release of [%#llx, +%llu) is not a range returned by "
                      "hbm_reserve",
                      npu_, static_cast<unsigned long long>(offset),
                      static_cast<unsigned long long>(bytes));
  reserved_.erase(it);
  uint64_t first = offset / kHbmPageBytes, count = bytes / kHbmPageBytes;
  set_pages_locked(first, count, false);
  discard_host_pages(first, count);
  // Return to the free map, coalescing with neighbours.
  uint64_t start = offset, len = bytes;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && next->first == start + len) {
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      len += prev->second;
      free_.erase(prev);
    }
  }
  free_.emplace(start, len);
  return ok_status();
}

Status NpuHbm::find_reservation_locked(uint64_t offset, uint64_t bytes, const char* what) const {
  auto it = reserved_.upper_bound(offset);
  if (it != reserved_.begin()) {
    --it;
    if (offset >= it->first && offset - it->first < it->second &&
        bytes <= it->second - (offset - it->first))
      return ok_status();
  }
  return make_error(StatusCode::kInvalidArgument,
                    "npu %u: %s of [%#llx, +%llu) is not inside one reserved HBM range", npu_,
                    what, static_cast<unsigned long long>(offset),
                    static_cast<unsigned long long>(bytes));
}

Status NpuHbm::commit(uint64_t offset, uint64_t bytes) {
  if (!page_aligned(offset) || !page_aligned(bytes) || bytes == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "npu %u: hbm_commit of [%#llx, +%llu): offset and size must be non-zero "
                      "multiples of 4096",
                      npu_, static_cast<unsigned long long>(offset),
                      static_cast<unsigned long long>(bytes));
  std::lock_guard<std::mutex> lock(mu_);
  MOE_TRY(find_reservation_locked(offset, bytes, "hbm_commit"));
  set_pages_locked(offset / kHbmPageBytes, bytes / kHbmPageBytes, true);
  return ok_status();
}

Status NpuHbm::decommit(uint64_t offset, uint64_t bytes) {
  if (!page_aligned(offset) || !page_aligned(bytes) || bytes == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "npu %u: hbm_decommit of [%#llx, +%llu): offset and size must be "
                      "non-zero multiples of 4096",
                      npu_, static_cast<unsigned long long>(offset),
                      static_cast<unsigned long long>(bytes));
  std::lock_guard<std::mutex> lock(mu_);
  MOE_TRY(find_reservation_locked(offset, bytes, "hbm_decommit"));
  uint64_t first = offset / kHbmPageBytes, count = bytes / kHbmPageBytes;
  set_pages_locked(first, count, false);
  discard_host_pages(first, count);
  return ok_status();
}

Status NpuHbm::map_host(uint64_t offset, uint64_t bytes, void** host_ptr) {
  MOE_TRY(check_committed(offset, bytes, "hbm_map_host"));
  *host_ptr = base_ + offset;
  return ok_status();
}

Status NpuHbm::check_committed(uint64_t offset, uint64_t bytes, const char* what) const {
  if (bytes == 0)
    return make_error(StatusCode::kInvalidArgument, "npu %u: %s of 0 bytes at %#llx", npu_,
                      what, static_cast<unsigned long long>(offset));
  if (offset >= window_bytes_ || bytes > window_bytes_ - offset)
    return make_error(StatusCode::kInvalidArgument,
                      "npu %u: %s [%#llx, +%llu) is outside its HBM (%s)", npu_, what,
                      static_cast<unsigned long long>(offset),
                      static_cast<unsigned long long>(bytes),
                      format_bytes(static_cast<double>(window_bytes_)).c_str());
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t first = offset / kHbmPageBytes;
  uint64_t last = (offset + bytes - 1) / kHbmPageBytes;
  for (uint64_t page = first; page <= last;) {
    const Leaf* leaf = leaves_[page / kPagesPerLeaf].get();
    if (leaf == nullptr) {
      return make_error(StatusCode::kInvalidArgument,
                        "npu %u: %s [%#llx, +%llu) touches uncommitted HBM at offset %#llx",
                        npu_, what, static_cast<unsigned long long>(offset),
                        static_cast<unsigned long long>(bytes),
                        static_cast<unsigned long long>(std::max(offset, page * kHbmPageBytes)));
    }
    // Whole words at a time where possible.
    uint64_t in_leaf = page % kPagesPerLeaf;
    uint64_t word = leaf->words[in_leaf / 64] >> (in_leaf % 64);
    uint64_t span = std::min<uint64_t>(64 - in_leaf % 64, last - page + 1);
    uint64_t want = span == 64 ? ~0ull : ((1ull << span) - 1);
    if ((word & want) != want) {
      uint64_t bad = page + static_cast<uint64_t>(std::countr_one(word & want));
      return make_error(StatusCode::kInvalidArgument,
                        "npu %u: %s [%#llx, +%llu) touches uncommitted HBM at offset %#llx",
                        npu_, what, static_cast<unsigned long long>(offset),
                        static_cast<unsigned long long>(bytes),
                        static_cast<unsigned long long>(std::max(offset, bad * kHbmPageBytes)));
    }
    page += span;
  }
  return ok_status();
}

uint64_t NpuHbm::set_pages_locked(uint64_t first, uint64_t count, bool committed) {
  uint64_t changed = 0;
  uint64_t page = first, end = first + count;
  while (page < end) {
    size_t leaf_index = page / kPagesPerLeaf;
    uint64_t leaf_end = std::min(end, (leaf_index + 1) * kPagesPerLeaf);
    std::unique_ptr<Leaf>& leaf = leaves_[leaf_index];
    if (leaf == nullptr) {
      if (!committed) {
        page = leaf_end;
        continue;
      }
      leaf = std::make_unique<Leaf>();
    }
    while (page < leaf_end) {
      uint64_t in_leaf = page % kPagesPerLeaf;
      uint64_t span = std::min<uint64_t>(64 - in_leaf % 64, leaf_end - page);
      uint64_t mask = (span == 64 ? ~0ull : ((1ull << span) - 1)) << (in_leaf % 64);
      uint64_t& word = leaf->words[in_leaf / 64];
      uint64_t flips = committed ? (mask & ~word) : (mask & word);
      if (flips != 0) {
        uint64_t n = static_cast<uint64_t>(std::popcount(flips));
        if (committed) {
          // Discard each newly committed run so it reads as zero.
          uint64_t bits = flips;
          while (bits != 0) {
            int lo = std::countr_zero(bits);
            int run = std::countr_one(bits >> lo);
            discard_host_pages(page - in_leaf % 64 + static_cast<uint64_t>(lo),
                               static_cast<uint64_t>(run));
            bits &= run == 64 ? 0 : ~(((1ull << run) - 1) << lo);
          }
          word |= flips;
          leaf->committed_pages += n;
          committed_pages_ += n;
        } else {
          word &= ~flips;
          leaf->committed_pages -= n;
          committed_pages_ -= n;
        }
        changed += n;
      }
      page += span;
    }
    if (leaf->committed_pages == 0) leaf.reset();
  }
  return changed;
}

void NpuHbm::discard_host_pages(uint64_t first_page, uint64_t count) const {
  if (base_ == nullptr || count == 0) return;
  if (madvise(base_ + first_page * kHbmPageBytes, count * kHbmPageBytes, MADV_DONTNEED) != 0)
    MOE_WARN("npu %u: madvise(DONTNEED) of %llu pages failed: %s", npu_,
             static_cast<unsigned long long>(count), std::strerror(errno));
}

uint64_t NpuHbm::committed_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return committed_pages_ * kHbmPageBytes;
}

uint64_t NpuHbm::resident_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (base_ == nullptr || committed_pages_ == 0) return 0;
  // mincore over the committed runs, a bounded chunk at a time.
  constexpr uint64_t kChunkPages = 1u << 16;
  std::vector<unsigned char> vec(kChunkPages);
  uint64_t resident_pages = 0;
  auto count_run = [&](uint64_t first, uint64_t count) {
    while (count > 0) {
      uint64_t n = std::min(count, kChunkPages);
      if (mincore(base_ + first * kHbmPageBytes, n * kHbmPageBytes, vec.data()) == 0) {
        for (uint64_t i = 0; i < n; ++i) resident_pages += vec[i] & 1;
      }
      first += n;
      count -= n;
    }
  };
  for (size_t li = 0; li < leaves_.size(); ++li) {
    const Leaf* leaf = leaves_[li].get();
    if (leaf == nullptr) continue;
    uint64_t run_start = 0, run_len = 0;
    for (uint64_t w = 0; w < kWordsPerLeaf; ++w) {
      uint64_t word = leaf->words[w];
      if (word == 0 && run_len == 0) continue;
      if (word == ~0ull) {
        if (run_len == 0) run_start = li * kPagesPerLeaf + w * 64;
        run_len += 64;
        continue;
      }
      for (int b = 0; b < 64; ++b) {
        uint64_t page = li * kPagesPerLeaf + w * 64 + static_cast<uint64_t>(b);
        if ((word >> b) & 1) {
          if (run_len == 0) run_start = page;
          ++run_len;
        } else if (run_len > 0) {
          count_run(run_start, run_len);
          run_len = 0;
        }
      }
    }
    if (run_len > 0) count_run(run_start, run_len);
  }
  return resident_pages * kHbmPageBytes;
}

}  // namespace moe::sim
