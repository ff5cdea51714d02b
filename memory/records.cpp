// A record lists the global ranges it holds (first page, pages, NPU, part). Mapping is all
// or nothing per allocation: when one NPU runs out, every page mapped so far is unmapped
// and every range given back before the error is returned.
#include "memory/records.h"

#include <algorithm>

#include "memory/mem_core.h"
#include "runtime/base/check.h"

namespace moe::mem {

struct RecordTable::Record {
  struct Range {
    uint64_t first_gpn = 0;
    uint64_t pages = 0;
    bool general = true;  // false: symmetric window pages
  };
  Allocation alloc;
  std::vector<Range> ranges;
  std::vector<uint64_t> mapped_gpns;                       // every page mapped, in order
  std::vector<std::pair<dev::NpuId, uint64_t>> placed;     // pages placed per NPU
  uint64_t symmetric_first_page = 0;                       // offset in the windows, in pages
  uint64_t symmetric_pages = 0;
};

RecordTable::RecordTable(MemCore& core) : core_(core) {
  symmetric_offsets_.reset(0, core.layout.symmetric_pages);
}

RecordTable::~RecordTable() = default;  // pages go with the page table and pools

Status RecordTable::add_general_range_locked(Record& rec, uint64_t pages, uint64_t align_pages,
                                             uint64_t* first_gpn) {
  MOE_TRY(core_.reserve_general(pages, align_pages, first_gpn));
  rec.ranges.push_back({*first_gpn, pages, true});
  return ok_status();
}

Status RecordTable::map_part_locked(Record& rec, uint64_t first_gpn, uint64_t pages,
                                    dev::NpuId npu, uint64_t asked_bytes) {
  std::vector<uint64_t> gpns(pages);
  for (uint64_t i = 0; i < pages; ++i) gpns[i] = first_gpn + i;
  Status s = core_.map_fresh(gpns.data(), gpns.size(), npu, make_owner(&rec, OwnerTag::kRecord));
  if (!s.ok()) {
    return core_.out_of_memory(
        npu, asked_bytes, strformat("a %s allocation", policy_name(rec.alloc.policy)).c_str(), s);
  }
  rec.mapped_gpns.insert(rec.mapped_gpns.end(), gpns.begin(), gpns.end());
  rec.placed.emplace_back(npu, pages);
  return ok_status();
}

void RecordTable::unmap_locked(Record& rec) {
  for (uint64_t gpn : rec.mapped_gpns) core_.unmap(gpn);
  rec.mapped_gpns.clear();
  for (const auto& r : rec.ranges)
    if (r.general) core_.release_general(r.first_gpn, r.pages);
  rec.ranges.clear();
  if (rec.symmetric_pages) symmetric_offsets_.release(rec.symmetric_first_page, rec.symmetric_pages);
  rec.symmetric_pages = 0;
}

StatusOr<Allocation> RecordTable::allocate(const AllocRequest& req) {
  const uint64_t page = core_.page_bytes;
  const uint64_t pages = (req.bytes + page - 1) / page;
  const uint64_t align_pages = std::max<uint64_t>(1, req.alignment / page);
  auto rec = std::make_unique<Record>();
  Allocation& a = rec->alloc;
  a.bytes = req.bytes;
  a.policy = req.policy;

  std::lock_guard<std::mutex> lock(mu_);
  Status s;
  switch (req.policy) {
    case Policy::kLocal: {  // own pages
      uint64_t first = 0;
      s = add_general_range_locked(*rec, pages, align_pages, &first);
      if (s.ok()) s = map_part_locked(*rec, first, pages, req.npu, req.bytes);
      if (s.ok()) {
        a.base = GlobalAddr(first << core_.page_shift);
        a.parts.push_back({req.npu, a.base, req.bytes});
      }
      break;
    }
    case Policy::kInterleaved: {
      const uint64_t grain = req.grain_bytes ? req.grain_bytes : page;
      const uint64_t n = req.npus.size();
      a.grain_bytes = grain;
      uint64_t first = 0;
      s = add_general_range_locked(*rec, pages, std::max(align_pages, uint64_t{1}), &first);
      if (!s.ok()) break;
      a.base = GlobalAddr(first << core_.page_shift);
      std::vector<std::vector<uint64_t>> by_member(n);
      for (uint64_t p = 0; p < pages; ++p) by_member[(p * page / grain) % n].push_back(first + p);
      for (uint64_t i = 0; i < n && s.ok(); ++i) {
        const auto& list = by_member[i];
        if (list.empty()) continue;
        Status m = core_.map_fresh(list.data(), list.size(), req.npus[i],
                                   make_owner(rec.get(), OwnerTag::kRecord));
        if (!m.ok()) {
          s = core_.out_of_memory(req.npus[i], list.size() * page, "an interleaved allocation", m);
          break;
        }
        rec->mapped_gpns.insert(rec->mapped_gpns.end(), list.begin(), list.end());
        rec->placed.emplace_back(req.npus[i], list.size());
        a.parts.push_back({req.npus[i], GlobalAddr(list.front() << core_.page_shift), 0});
      }
      if (s.ok()) {
        // Bytes per member: each grain-sized chunk of [0, bytes) counts for its NPU.
        for (uint64_t off = 0, k = 0; off < req.bytes; off += grain, ++k) {
          const uint64_t chunk = std::min(grain, req.bytes - off);
          for (auto& part : a.parts)
            if (part.npu == req.npus[k % n]) part.bytes += chunk;
        }
      }
      break;
    }
    case Policy::kSymmetric: {
      uint64_t off = 0;
      if (!symmetric_offsets_.allocate(pages, align_pages, &off)) {
        s = make_error(StatusCode::kOutOfMemory,
                       "symmetric heap: no free range of %llu pages at the same offset on every "
                       "NPU (window %llu pages, %llu free, largest %llu; MEM_SYMMETRIC_HEAP_BYTES)",
                       static_cast<unsigned long long>(pages),
                       static_cast<unsigned long long>(core_.layout.symmetric_pages),
                       static_cast<unsigned long long>(symmetric_offsets_.free_units()),
                       static_cast<unsigned long long>(symmetric_offsets_.largest_free_units()));
        break;
      }
      rec->symmetric_first_page = off;
      rec->symmetric_pages = pages;
      a.symmetric_offset = off * page;
      for (dev::NpuId m : req.npus) {
        const uint64_t first =
            core_.layout.symmetric_first_page + uint64_t{m} * core_.layout.symmetric_pages + off;
        rec->ranges.push_back({first, pages, false});
        s = map_part_locked(*rec, first, pages, m, req.bytes);
        if (!s.ok()) break;
        a.parts.push_back({m, GlobalAddr(first << core_.page_shift), req.bytes});
      }
      if (s.ok()) a.base = a.parts[0].addr;
      break;
    }
    case Policy::kReplicated: {
      for (dev::NpuId m : req.npus) {
        uint64_t first = 0;
        s = add_general_range_locked(*rec, pages, align_pages, &first);
        if (s.ok()) s = map_part_locked(*rec, first, pages, m, req.bytes);
        if (!s.ok()) break;
        a.parts.push_back({m, GlobalAddr(first << core_.page_shift), req.bytes});
      }
      if (s.ok()) a.base = a.parts[0].addr;
      break;
    }
  }
  if (!s.ok()) {
    unmap_locked(*rec);
    return s;
  }
  for (const auto& [npu, n] : rec->placed) {
    core_.counters[npu].in_use.add(static_cast<int64_t>(n * page));
    core_.counters[npu].policy_pages.fetch_add(static_cast<int64_t>(n), std::memory_order_relaxed);
  }
  if (req.policy == Policy::kInterleaved) {
    ranges_[a.base.value] = RangeRef{a.base.value + pages * page, rec.get(), 0};
  } else {
    for (uint32_t i = 0; i < a.parts.size(); ++i)
      ranges_[a.parts[i].addr.value] = RangeRef{a.parts[i].addr.value + pages * page, rec.get(), i};
  }
  Allocation out = a;
  records_.emplace(a.base.value, std::move(rec));
  return out;
}

Status RecordTable::free(uint64_t addr) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = records_.find(addr);
  if (it == records_.end()) {
    auto after = ranges_.upper_bound(addr);
    if (after != ranges_.begin()) {
      auto r = std::prev(after);
      if (addr < r->second.end) {
        const Allocation& a = r->second.record->alloc;
        if (addr == r->first) {
          return make_error(StatusCode::kInvalidArgument,
                            "free(%s): this is part %u (npu %u) of the %s allocation at %s; free "
                            "the allocation's base",
                            to_string(GlobalAddr(addr)).c_str(), r->second.part,
                            a.parts[r->second.part].npu, policy_name(a.policy),
                            to_string(a.base).c_str());
        }
        return make_error(StatusCode::kInvalidArgument,
                          "free(%s): not the start of an allocation: it is %llu bytes into the %s "
                          "allocation at %s (%llu bytes)",
                          to_string(GlobalAddr(addr)).c_str(),
                          static_cast<unsigned long long>(addr - r->first), policy_name(a.policy),
                          to_string(a.base).c_str(), static_cast<unsigned long long>(a.bytes));
      }
    }
    return make_error(StatusCode::kInvalidArgument,
                      "free(%s): not allocated (a double free, or never allocated)",
                      to_string(GlobalAddr(addr)).c_str());
  }
  Record& rec = *it->second;
  const uint64_t page = core_.page_bytes;
  for (const auto& [npu, n] : rec.placed) {
    core_.counters[npu].in_use.sub(static_cast<int64_t>(n * page));
    core_.counters[npu].policy_pages.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
  }
  if (rec.alloc.policy == Policy::kInterleaved) {
    ranges_.erase(rec.alloc.base.value);
  } else {
    for (const auto& part : rec.alloc.parts) ranges_.erase(part.addr.value);
  }
  unmap_locked(rec);
  records_.erase(it);
  return ok_status();
}

bool RecordTable::find(uint64_t addr, BlockInfo* out) {
  std::lock_guard<std::mutex> lock(mu_);
  auto after = ranges_.upper_bound(addr);
  if (after == ranges_.begin()) return false;
  auto r = std::prev(after);
  if (addr >= r->second.end) return false;
  const Allocation& a = r->second.record->alloc;
  out->start = GlobalAddr(r->first);
  out->bytes = r->second.end - r->first;
  out->policy = a.policy;
  out->home_npu = a.policy == Policy::kInterleaved ? dev::kInvalidId : a.parts[r->second.part].npu;
  out->path = "pages";
  out->allocation_base = a.base;
  return true;
}

}  // namespace moe::mem
