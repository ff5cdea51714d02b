// Internal: page-granular allocations (interleaved, symmetric, replicated, own-pages local)
// and the records that describe them.
//
// Each such allocation owns whole pages: ranges of the general space (interleaved,
// replicated: one range per replica, own-pages) or the same page offsets in each member's
// symmetric window (symmetric: the offsets come from one allocator shared by every NPU, so an
// offset is free on all members at once). The pages' owner word points to the record; frees
// and lookups go through this table's map of ranges under its lock, so a record is never
// read after it is gone.
//
// Placement: interleaved page p goes to npus[(p * page / grain) mod n]; the others place
// every page of a part on its member.
//
// Thread-safety: all functions are thread-safe (one lock).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "memory/extent_allocator.h"
#include "memory/global_addr.h"
#include "memory/global_memory.h"
#include "runtime/base/status.h"

namespace moe::mem {

class MemCore;

class RecordTable {
 public:
  explicit RecordTable(MemCore& core);
  ~RecordTable();

  // Precondition: the request was validated (policy fields, NPUs, grain).
  StatusOr<Allocation> allocate(const AllocRequest& request);
  // Frees the allocation whose base is addr; kInvalidArgument naming what addr is otherwise.
  Status free(uint64_t addr);
  // The part containing addr; false when none.
  bool find(uint64_t addr, BlockInfo* out);

 private:
  struct Record;
  struct RangeRef {
    uint64_t end = 0;  // one past the last byte
    Record* record = nullptr;
    uint32_t part = 0;
  };
  Status map_part_locked(Record& rec, uint64_t first_gpn, uint64_t pages, dev::NpuId npu,
                         uint64_t asked_bytes);
  void unmap_locked(Record& rec);
  Status add_general_range_locked(Record& rec, uint64_t pages, uint64_t align_pages,
                                  uint64_t* first_gpn);

  MemCore& core_;
  std::mutex mu_;
  std::map<uint64_t, std::unique_ptr<Record>> records_;  // by base
  std::map<uint64_t, RangeRef> ranges_;                  // by first byte of each part
  ExtentAllocator symmetric_offsets_;                    // in pages of a window
};

}  // namespace moe::mem
