// Unit tests of the memory layer's building blocks: the extent allocator, the size classes
// and their division, the page table, and the config checks.
#include <doctest/doctest.h>

#include <map>
#include <random>
#include <thread>
#include <vector>

#include "memory/extent_allocator.h"
#include "memory/mem_options.h"
#include "memory/page_table.h"
#include "memory/size_classes.h"
#include "tests/memory/mem_test_util.h"

using namespace moe;
using namespace moe::mem;

TEST_CASE("mem.extent: best fit, alignment, coalescing, against a bitmap model") {
  ExtentAllocator ea;
  const uint64_t kUnits = 4096;
  ea.reset(100, kUnits);
  std::vector<uint8_t> used(kUnits, 0);
  std::map<uint64_t, uint64_t> live;
  std::mt19937_64 rng(7);
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t units = 1 + rng() % 40;
      const uint64_t align = uint64_t{1} << (rng() % 4);
      uint64_t start = 0;
      if (!ea.allocate(units, align, &start)) {
        // Refusal must be honest: no free aligned run of that length exists in the model.
        bool exists = false;
        for (uint64_t s = 0; s + units <= kUnits && !exists; ++s) {
          if ((s + 100) % align) continue;
          bool ok = true;
          for (uint64_t i = 0; i < units && ok; ++i) ok = !used[s + i];
          exists = ok;
        }
        CHECK_FALSE(exists);
        continue;
      }
      REQUIRE(start >= 100);
      REQUIRE(start + units <= 100 + kUnits);
      CHECK(start % align == 0);
      for (uint64_t i = 0; i < units; ++i) {
        REQUIRE(used[start - 100 + i] == 0);
        used[start - 100 + i] = 1;
      }
      live[start] = units;
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      ea.release(it->first, it->second);
      for (uint64_t i = 0; i < it->second; ++i) used[it->first - 100 + i] = 0;
      live.erase(it);
    }
  }
  uint64_t free_model = 0;
  for (uint8_t u : used) free_model += u == 0;
  CHECK(ea.free_units() == free_model);
  // Free extents never touch (always coalesced).
  uint64_t prev_end = 0;
  bool first = true;
  ea.for_each_free([&](uint64_t start, uint64_t units) {
    if (!first) CHECK(start > prev_end);
    first = false;
    prev_end = start + units;
  });
  for (auto& [s, u] : live) ea.release(s, u);
  CHECK(ea.num_free_extents() == 1);
  CHECK(ea.largest_free_units() == kUnits);
}

TEST_CASE("mem.extent: best fit picks the smallest hole, lowest first") {
  ExtentAllocator ea;
  ea.reset(0, 100);
  uint64_t a, b, c, d, e;
  REQUIRE(ea.allocate(10, 1, &a));
  REQUIRE(ea.allocate(5, 1, &b));
  REQUIRE(ea.allocate(10, 1, &c));
  REQUIRE(ea.allocate(3, 1, &d));
  REQUIRE(ea.allocate(10, 1, &e));
  ea.release(a, 10);  // hole of 10 at 0
  ea.release(d, 3);   // hole of 3 at 25
  uint64_t x;
  REQUIRE(ea.allocate(3, 1, &x));
  CHECK(x == d);  // exact fit beats the earlier, larger hole
  REQUIRE(ea.allocate(4, 1, &x));
  CHECK(x == a);
  CHECK(ea.is_free(4, 6));
  CHECK_FALSE(ea.is_free(3, 2));
}

TEST_CASE("mem.size_classes: every size maps to the smallest class that holds it") {
  SizeClasses sc(256 << 10, 2 << 20);
  CHECK(sc.max_bytes() == (256u << 10));
  for (uint64_t bytes = 1; bytes <= sc.max_bytes(); bytes += (bytes < 4096 ? 1 : 61)) {
    const uint32_t c = sc.index_of(bytes);
    REQUIRE(c < sc.count());
    CHECK(sc.at(c).bytes >= bytes);
    if (c > 0) CHECK(sc.at(c - 1).bytes < bytes);
    // Waste: under 16 bytes up to 128 B, under 25% above.
    CHECK(double(sc.at(c).bytes) <= std::max<double>(double(bytes) + 15, bytes * 1.25) + 1e-9);
  }
  // Alignment moves up to a class the alignment divides.
  const uint32_t c = sc.index_of(100, 64);
  REQUIRE(c < sc.count());
  CHECK(sc.at(c).bytes % 64 == 0);
  CHECK(sc.at(c).bytes >= 100);
  CHECK(sc.index_of(300 << 10, 16) == sc.count());  // above the limit: none
}

TEST_CASE("mem.size_classes: multiply-shift block index is exact for every block") {
  SizeClasses sc(512 << 10, 2 << 20);
  for (uint32_t c = 0; c < sc.count(); ++c) {
    const SizeClass& k = sc.at(c);
    REQUIRE(k.use_magic);
    uint64_t wrong = 0;
    for (uint64_t i = 0; i < k.blocks_per_slab; ++i) {
      const uint64_t off = i * k.bytes;
      wrong += sc.block_index(k, off) != i;
      wrong += sc.block_index(k, off + k.bytes - 1) != i;  // last byte of the block
    }
    CHECK_MESSAGE(wrong == 0, "class " << k.bytes);
  }
}

TEST_CASE("mem.page_table: entries round-trip; leaves appear on demand; concurrent creators") {
  PageTable pt(48, 21);
  CHECK(pt.entry(12345) == 0);
  CHECK(pt.leaf_bytes() == 0);
  const uint64_t e = page_entry::make(383, 77, 0xfffffffe);
  CHECK(page_entry::npu(e) == 383);
  CHECK(page_entry::slot(e) == 77);
  CHECK(page_entry::device_page(e) == 0xfffffffe);
  CHECK(page_entry::npu(page_entry::make(0, 0, 0)) == 0);
  CHECK(page_entry::make(0, 0, 0) != 0);  // NPU 0 at offset 0 is still a mapped entry
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pt, t] {
      for (uint64_t i = 0; i < 1000; ++i) {
        const uint64_t gpn = (i * 4 + t) * 7919;
        pt.entry_slot(gpn).store(page_entry::make(t, 0, i), std::memory_order_release);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) {
    for (uint64_t i = 0; i < 1000; ++i) {
      const uint64_t e2 = pt.entry((i * 4 + t) * 7919);
      REQUIRE(page_entry::npu(e2) == static_cast<uint32_t>(t));
      REQUIRE(page_entry::device_page(e2) == i);
    }
  }
  CHECK(pt.entry(pt.num_pages()) == 0);  // out of range reads as unmapped
  CHECK(pt.leaf_bytes() > 0);
}

TEST_CASE("mem.config: bad fields are named; defaults come from the options table") {
  MemConfig c = MemConfig::from_options();
  CHECK(c.validate().ok());
  CHECK(c.page_bytes == uint64_t(kMemPageBytes.get()));
  c.page_bytes = 3 << 20;
  Status s = c.validate();
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("MEM_PAGE_BYTES") != std::string::npos);
  c = MemConfig();
  c.slab_max_bytes = c.page_bytes;  // more than a quarter page
  CHECK(c.validate().message().find("MEM_SLAB_MAX_BYTES") != std::string::npos);
  c = MemConfig();
  c.segment_bytes = c.page_bytes + 4096;
  CHECK(c.validate().message().find("MEM_SEGMENT_BYTES") != std::string::npos);

  // The whole machine fits the default 48-bit space; a 40-bit space does not.
  auto drv = testing::make_driver("cm384", uint64_t{128} << 30);
  auto ok = GlobalMemory::create(drv.get(), MemConfig());
  CHECK(ok.ok());
  MemConfig tight;
  tight.va_bits = 40;
  auto bad = GlobalMemory::create(drv.get(), tight);
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("MEM_VA_BITS") != std::string::npos);
  CHECK(GlobalMemory::create(nullptr, MemConfig()).status().code() == StatusCode::kInvalidArgument);
}
