// Migration: pages move to another NPU while their global addresses stay valid, and readers
// that keep reading during the moves (through read(), or raw host pointers inside a
// ReadGuard) only ever see the original bytes, whole. Freed frames are poisoned
// (MEM_POISON_FREED), so a reader that touched a frame after it was reused or freed would
// see 0xDB bytes and fail.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "tests/memory/mem_test_util.h"

using namespace moe;
using namespace moe::mem;
using namespace moe::mem::testing;

namespace {
MemConfig poisoning_config() {
  MemConfig c = small_config();
  c.poison_freed = true;
  return c;
}
}  // namespace

TEST_CASE("mem.migration: readers keep reading while pages move; every read sees whole bytes") {
  auto drv = make_driver("n8", uint64_t{128} << 20);
  auto mem = make_memory(drv.get(), poisoning_config());
  const uint64_t page = mem->page_bytes();
  AllocRequest req;
  req.npu = 0;
  req.bytes = 6 * page + 4096;  // 7 pages, the last one partial
  req.own_pages = true;
  auto a = mem->allocate(req);
  REQUIRE(a.ok());
  const uint64_t tag = 4242;
  const auto original = pattern(tag, req.bytes);
  REQUIRE(mem->write(a->base, original.data(), req.bytes).ok());

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0}, bad_reads{0}, raw_reads{0}, bad_raw{0};
  auto copy_reader = [&](int seed) {
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> buf(128 << 10);
    while (!stop.load(std::memory_order_relaxed)) {
      // Reads around page boundaries, so many of them span two pages mid-move.
      const uint64_t len = 1 + rng() % (128 << 10);
      const uint64_t boundary = (1 + rng() % 6) * page;
      const uint64_t off = std::min(boundary - std::min(boundary, rng() % len), req.bytes - len);
      const Status s = mem->read(a->base + off, buf.data(), len);
      if (!s.ok() || first_mismatch(buf.data(), tag, len, off) != len) ++bad_reads;
      ++reads;
    }
  };
  auto raw_reader = [&](int seed) {
    std::mt19937_64 rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t off = rng() % req.bytes;
      GlobalMemory::ReadGuard guard(*mem);
      const auto* host = static_cast<const uint8_t*>(mem->translate_host(a->base + off));
      const uint64_t len = std::min({req.bytes - off, mem->contiguous_bytes(a->base + off),
                                     uint64_t{64} << 10});
      if (host == nullptr || first_mismatch(host, tag, len, off) != len) ++bad_raw;
      ++raw_reads;
    }
  };
  std::vector<std::thread> readers;
  readers.emplace_back(copy_reader, 1);
  readers.emplace_back(copy_reader, 2);
  readers.emplace_back(raw_reader, 3);

  const dev::NpuId route[] = {1, 2, 3, 0, 5, 7, 0, 1};
  uint64_t moved = 0;
  for (dev::NpuId target : route) {
    MigrateResult res;
    const Status s = mem->migrate(a.value(), target, &res);
    REQUIRE_MESSAGE(s.ok(), s.to_string());
    CHECK(res.pages_moved == 7);
    CHECK(res.bytes_copied == 7 * page);
    moved += res.pages_moved;
    for (uint64_t off = 0; off < req.bytes; off += page) {
      dev::DevicePtr where;
      REQUIRE(mem->translate(a->base + off, &where));
      CHECK(where.npu == target);
    }
    // Keep readers reading across each move for a while.
    const uint64_t seen = reads.load() + raw_reads.load();
    while (reads.load() + raw_reads.load() < seen + 20) std::this_thread::yield();
  }
  stop = true;
  for (auto& t : readers) t.join();
  CHECK(bad_reads.load() == 0);
  CHECK(bad_raw.load() == 0);
  CHECK(reads.load() > 0);
  CHECK(raw_reads.load() > 0);
  MESSAGE("reads during migration: " << reads.load() << " copies, " << raw_reads.load() << " raw");

  // The final bytes equal the original; the old NPUs hold none of its frames.
  std::vector<uint8_t> back(req.bytes);
  REQUIRE(mem->read(a->base, back.data(), req.bytes).ok());
  CHECK(back == original);
  CHECK(mem->npu_stats(1).resident_bytes == 7 * page);  // ended on NPU 1
  for (dev::NpuId n : {0u, 2u, 3u, 5u, 7u}) CHECK(mem->npu_stats(n).resident_bytes == 0);
  CHECK(mem->npu_stats(1).pages_migrated_in == 14);
  CHECK(mem->npu_stats(0).pages_migrated_out == 21);
  // A migrated allocation frees normally; its frames go back to the NPU that holds them.
  CHECK(mem->free(a.value()).ok());
  CHECK(mem->npu_stats(1).resident_bytes == 0);
  CHECK(moved == 7 * 8);
}

TEST_CASE("mem.migration: slab and large-heap pages move with their neighbours intact") {
  auto drv = make_driver("n8", uint64_t{64} << 20);
  auto mem = make_memory(drv.get(), poisoning_config());
  std::vector<std::pair<GlobalAddr, uint64_t>> blocks;
  for (uint64_t i = 0; i < 50; ++i) {
    const uint64_t bytes = 100 + 37 * i;
    auto a = mem->allocate_local(2, bytes);
    REQUIRE(a.ok());
    const auto data = pattern(i, bytes);
    REQUIRE(mem->write(a.value(), data.data(), bytes).ok());
    blocks.emplace_back(a.value(), bytes);
  }
  auto large = mem->allocate_local(2, 3 << 20);
  REQUIRE(large.ok());
  const auto large_data = pattern(999, 3 << 20);
  REQUIRE(mem->write(large.value(), large_data.data(), large_data.size()).ok());

  // Move the pages of every block (duplicates are already there the second time).
  uint64_t moved = 0, already = 0;
  for (auto [addr, bytes] : blocks) {
    MigrateResult r;
    REQUIRE(mem->migrate(addr, bytes, 6, &r).ok());
    moved += r.pages_moved;
    already += r.pages_already_there;
  }
  CHECK(moved >= 1);
  CHECK(already >= 1);
  MigrateResult r;
  REQUIRE(mem->migrate(large.value(), 3 << 20, 6, &r).ok());
  CHECK(r.pages_moved == 2);

  for (uint64_t i = 0; i < blocks.size(); ++i) {
    auto [addr, bytes] = blocks[i];
    std::vector<uint8_t> back(bytes);
    REQUIRE(mem->read(addr, back.data(), bytes).ok());
    CHECK(first_mismatch(back.data(), i, bytes) == bytes);
    dev::DevicePtr where;
    REQUIRE(mem->translate(addr, &where));
    CHECK(where.npu == 6);
    auto info = mem->block_info(addr);
    REQUIRE(info.ok());
    CHECK(info->home_npu == 2);  // the heap that gave it is unchanged
  }
  std::vector<uint8_t> back(3 << 20);
  REQUIRE(mem->read(large.value(), back.data(), back.size()).ok());
  CHECK(back == large_data);
  CHECK(mem->npu_stats(2).resident_bytes == 0);
  for (auto [addr, bytes] : blocks) CHECK(mem->free(addr).ok());
  CHECK(mem->free(large.value()).ok());
  mem->flush_thread_cache();
  CHECK(mem->npu_stats(2).in_use_bytes == 0);
  // What stays on NPU 6 is exactly the empty slab each size class keeps (one per class).
  CHECK(mem->npu_stats(6).resident_bytes == mem->npu_stats(2).slab_pages * mem->page_bytes());
  CHECK(mem->npu_stats(2).slab_pages <= 20);
}

TEST_CASE("mem.migration: refused inside a read section, on unmapped pages, when the target is full") {
  auto drv = make_driver("n8", uint64_t{16} << 20);
  auto mem = make_memory(drv.get(), small_config());
  AllocRequest req;
  req.npu = 0;
  req.bytes = 6 << 20;
  req.own_pages = true;
  auto a = mem->allocate(req);
  REQUIRE(a.ok());
  {
    GlobalMemory::ReadGuard guard(*mem);
    Status s = mem->migrate(a.value(), 1);
    CHECK(s.code() == StatusCode::kFailedPrecondition);
    CHECK(mem->synchronize_readers().code() == StatusCode::kFailedPrecondition);
  }
  CHECK(mem->synchronize_readers().ok());
  Status s = mem->migrate(a->base, 8 << 20, 1);  // runs past the allocation's 3 pages
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("not mapped") != std::string::npos);
  CHECK(mem->npu_stats(1).resident_bytes == 0);  // nothing moved
  CHECK(mem->migrate(a.value(), 8).code() == StatusCode::kInvalidArgument);  // no NPU 8

  // Fill NPU 1 so that only two pages are left, then move three.
  AllocRequest fill = req;
  fill.npu = 1;
  fill.bytes = 12 << 20;
  auto f = mem->allocate(fill);
  REQUIRE(f.ok());
  s = mem->migrate(a.value(), 1);
  CHECK(s.code() == StatusCode::kOutOfMemory);
  CHECK(s.message().find("npu 1") != std::string::npos);
  dev::DevicePtr where;
  REQUIRE(mem->translate(a->base, &where));
  CHECK(where.npu == 0);  // the batch was refused whole
  CHECK(mem->free(f.value()).ok());
  CHECK(mem->migrate(a.value(), 1).ok());
  CHECK(mem->free(a.value()).ok());
}
