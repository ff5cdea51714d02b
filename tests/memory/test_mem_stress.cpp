// Randomized stress against a shadow model: several threads, thousands of operations from a
// seed, every policy, cross-thread frees, then double frees. The shadow keeps every live
// allocation with the bytes it must hold and the ranges it occupies; the allocator must
// never hand out overlapping ranges, never lose a byte, refuse every bad free, and account
// in use exactly what the shadow says once the threads are done.
#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "runtime/base/check.h"
#include "tests/memory/mem_test_util.h"

using namespace moe;
using namespace moe::mem;
using namespace moe::mem::testing;

namespace {

struct Live {
  Allocation alloc;
  uint64_t tag = 0;
};

// Bytes checked per part: all of a small block, head and tail of a large one.
constexpr uint64_t kEdge = 512;

Status write_marks(GlobalMemory& mem, const Allocation& a, uint64_t tag) {
  const uint64_t n = a.bytes;
  auto data = pattern(tag, std::min(n, kEdge));
  MOE_TRY(mem.write_all(a, 0, data.data(), data.size()));
  if (n > kEdge) {
    std::vector<uint8_t> tail(kEdge);
    for (uint64_t i = 0; i < kEdge; ++i) tail[i] = pattern_byte(tag, n - kEdge + i);
    MOE_TRY(mem.write_all(a, n - kEdge, tail.data(), kEdge));
  }
  return ok_status();
}

bool check_marks(GlobalMemory& mem, const Allocation& a, uint64_t tag) {
  const bool groups = a.policy == Policy::kSymmetric || a.policy == Policy::kReplicated;
  const size_t parts = groups ? a.parts.size() : 1;
  std::vector<uint8_t> buf(kEdge);
  for (size_t p = 0; p < parts; ++p) {
    const GlobalAddr base = groups ? a.parts[p].addr : a.base;
    const uint64_t head = std::min(a.bytes, kEdge);
    if (!mem.read(base, buf.data(), head).ok() || first_mismatch(buf.data(), tag, head) != head)
      return false;
    if (a.bytes > kEdge) {
      if (!mem.read(base + (a.bytes - kEdge), buf.data(), kEdge).ok() ||
          first_mismatch(buf.data(), tag, kEdge, a.bytes - kEdge) != kEdge)
        return false;
    }
  }
  return true;
}

// The global ranges an allocation occupies.
std::vector<std::pair<uint64_t, uint64_t>> ranges_of(const Allocation& a) {
  std::vector<std::pair<uint64_t, uint64_t>> r;
  if (a.policy == Policy::kSymmetric || a.policy == Policy::kReplicated) {
    for (const auto& p : a.parts) r.emplace_back(p.addr.value, p.addr.value + a.bytes);
  } else {
    r.emplace_back(a.base.value, a.base.value + a.bytes);
  }
  return r;
}

class Shadow {
 public:
  // False when a range overlaps a live one (an allocator bug).
  bool insert(const Allocation& a) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto [s, e] : ranges_of(a)) {
      auto it = ranges_.lower_bound(s);
      if (it != ranges_.end() && it->first < e) return false;
      if (it != ranges_.begin() && std::prev(it)->second > s) return false;
    }
    for (auto [s, e] : ranges_of(a)) ranges_[s] = e;
    return true;
  }
  void erase(const Allocation& a) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto [s, e] : ranges_of(a)) ranges_.erase(s);
  }
  void post(Live l) {
    std::lock_guard<std::mutex> lock(mu_);
    mailbox_.push_back(std::move(l));
  }
  bool take(Live* out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (mailbox_.empty()) return false;
    *out = std::move(mailbox_.back());
    mailbox_.pop_back();
    return true;
  }
  std::vector<Live> drain() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(mailbox_);
  }

 private:
  std::mutex mu_;
  std::map<uint64_t, uint64_t> ranges_;
  std::vector<Live> mailbox_;
};

AllocRequest random_request(std::mt19937_64& rng, uint32_t num_npus) {
  AllocRequest r;
  const uint32_t kind = rng() % 100;
  r.npu = static_cast<dev::NpuId>(rng() % num_npus);
  if (kind < 55) {
    r.bytes = 1 + rng() % 4096;
  } else if (kind < 80) {
    r.bytes = 4096 + rng() % (252 << 10);
  } else if (kind < 92) {
    r.bytes = (256 << 10) + rng() % (4 << 20);
    if (rng() % 8 == 0) r.alignment = uint64_t{1} << (12 + rng() % 9);
  } else {
    r.bytes = 1 + rng() % (6 << 20);
    const uint32_t p = rng() % 4;
    if (p == 0) {
      r.own_pages = true;
    } else {
      r.policy = p == 1 ? Policy::kInterleaved : p == 2 ? Policy::kSymmetric : Policy::kReplicated;
      const uint32_t first = rng() % num_npus;
      const uint32_t count = 1 + rng() % 3;
      for (uint32_t i = 0; i < count; ++i) r.npus.push_back((first + i * 5) % num_npus);
      if (p == 1) r.grain_bytes = (1 + rng() % 2) * (2 << 20);
    }
  }
  return r;
}

}  // namespace

TEST_CASE("mem.stress: threads, every policy, cross-thread frees, against a shadow model") {
  const uint64_t seed = 20240611;
  CAPTURE(seed);
  auto drv = make_driver("n16", uint64_t{96} << 20);
  auto mem = make_memory(drv.get(), small_config());
  const uint32_t npus = mem->num_npus();
  Shadow shadow;
  constexpr int kThreads = 4;
  constexpr int kOps = 2500;
  std::atomic<int> overlaps{0}, corrupt{0}, bad_status{0}, ooms{0};
  std::atomic<int> allocs{0}, frees{0};
  std::vector<std::vector<Live>> left(kThreads);

  auto worker = [&](int t) {
    std::mt19937_64 rng(seed + t);
    std::vector<Live> mine;
    uint64_t counter = 0;
    for (int op = 0; op < kOps; ++op) {
      const uint32_t what = rng() % 100;
      if (what < 45 || mine.empty()) {
        AllocRequest r = random_request(rng, npus);
        auto a = mem->allocate(r);
        if (!a.ok()) {
          if (a.status().code() == StatusCode::kOutOfMemory) ++ooms;
          else ++bad_status;
          continue;
        }
        ++allocs;
        Live l{std::move(a).value(), (uint64_t(t) << 32) | counter++};
        if (!shadow.insert(l.alloc)) ++overlaps;
        if (!write_marks(*mem, l.alloc, l.tag).ok()) ++bad_status;
        mine.push_back(std::move(l));
      } else if (what < 80) {
        const size_t i = rng() % mine.size();
        Live l = std::move(mine[i]);
        mine[i] = std::move(mine.back());
        mine.pop_back();
        if (!check_marks(*mem, l.alloc, l.tag)) ++corrupt;
        shadow.erase(l.alloc);
        if (!mem->free(l.alloc).ok()) ++bad_status;
        ++frees;
        // No double-free probe here: another thread may already have been given the same
        // address, and a stale free of it is then a valid free of that block (the caveat in
        // memory/global_memory.h). The probes run below, once the other threads are done.
      } else if (what < 90) {
        const Live& l = mine[rng() % mine.size()];
        if (!check_marks(*mem, l.alloc, l.tag)) ++corrupt;
      } else if (what < 95) {
        const size_t i = rng() % mine.size();
        shadow.post(std::move(mine[i]));
        mine[i] = std::move(mine.back());
        mine.pop_back();
      } else {
        Live l;
        if (shadow.take(&l)) {  // free what another thread allocated
          if (!check_marks(*mem, l.alloc, l.tag)) ++corrupt;
          shadow.erase(l.alloc);
          if (!mem->free(l.alloc).ok()) ++bad_status;
          ++frees;
        }
      }
    }
    left[t] = std::move(mine);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();  // their thread caches are flushed on exit

  CHECK(overlaps.load() == 0);
  CHECK(corrupt.load() == 0);
  CHECK(bad_status.load() == 0);
  CHECK(allocs.load() > kThreads * kOps / 4);
  MESSAGE("allocations " << allocs.load() << ", frees " << frees.load() << ", out of memory "
                         << ooms.load());

  // Accounting equals the shadow: what every live allocation holds, per NPU.
  std::vector<Live> live;
  for (auto& v : left)
    for (auto& l : v) live.push_back(std::move(l));
  for (auto& l : shadow.drain()) live.push_back(std::move(l));
  std::vector<uint64_t> expected(npus, 0);
  const uint64_t page = mem->page_bytes();
  for (const Live& l : live) {
    const Allocation& a = l.alloc;
    const uint64_t pages = (a.bytes + page - 1) / page;
    if (a.policy == Policy::kLocal) {
      auto info = mem->block_info(a.base);
      REQUIRE(info.ok());
      expected[a.parts[0].npu] += info->path == std::string("pages") ? pages * page : info->bytes;
    } else if (a.policy == Policy::kInterleaved) {
      for (uint64_t p = 0; p < pages; ++p) {
        dev::DevicePtr where;
        REQUIRE(mem->translate(a.base + p * page, &where));
        expected[where.npu] += page;
      }
    } else {
      for (const auto& part : a.parts) expected[part.npu] += pages * page;
    }
  }
  mem->flush_thread_cache();
  for (dev::NpuId n = 0; n < npus; ++n) {
    CAPTURE(n);
    CHECK(mem->npu_stats(n).in_use_bytes == expected[n]);
  }
  for (const Live& l : live) {
    CHECK(check_marks(*mem, l.alloc, l.tag));
    CHECK(mem->free(l.alloc).ok());
    // Nothing allocates now, so the address cannot have been handed out again: a double
    // free must be refused.
    CHECK(mem->free(l.alloc).code() == StatusCode::kInvalidArgument);
  }
  mem->flush_thread_cache();
  for (dev::NpuId n = 0; n < npus; ++n) {
    const NpuMemStats s = mem->npu_stats(n);
    CHECK(s.in_use_bytes == 0);
    CHECK(s.large_blocks == 0);
    CHECK(s.policy_pages == 0);
  }
}
