// Errors: out of memory names the NPU, the bytes asked, the free bytes and the largest free
// block (and those figures are honest: the largest free block can then be allocated); bad
// frees (double, never allocated, interior, a group's part) are refused with what the
// address is and leave the heaps intact; bad requests name the field; a lost NPU says so.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/memory/mem_test_util.h"

using namespace moe;
using namespace moe::mem;
using namespace moe::mem::testing;

namespace {
bool has(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}
}  // namespace

TEST_CASE("mem.errors: out of memory on the large path names NPU, asked, free, largest") {
  auto drv = make_driver("n8", uint64_t{64} << 20);  // 64 MiB per NPU
  auto mem = make_memory(drv.get(), small_config());
  auto a = mem->allocate_local(3, 40 << 20);
  REQUIRE(a.ok());
  auto b = mem->allocate_local(3, 40 << 20);
  REQUIRE_FALSE(b.ok());
  const Status& s = b.status();
  CHECK(s.code() == StatusCode::kOutOfMemory);
  CHECK(s.group() == StatusGroup::kResource);
  CHECK(has(s, "npu 3"));
  CHECK(has(s, "asked 41943040 bytes"));
  const NpuMemStats st = mem->npu_stats(3);
  CHECK(has(s, strformat("free %llu bytes", (unsigned long long)st.free_bytes)));
  CHECK(has(s, strformat("largest free block %llu bytes", (unsigned long long)st.largest_free_block_bytes)));
  CHECK(st.free_bytes == (24u << 20));
  CHECK(st.largest_free_block_bytes == (24u << 20));
  // The figure is honest: exactly the largest free block can be had, one grain more cannot.
  auto c = mem->allocate_local(3, st.largest_free_block_bytes);
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  CHECK(mem->allocate_local(3, 64 << 10).status().code() == StatusCode::kOutOfMemory);
  // Other NPUs are unaffected.
  CHECK(mem->allocate_local(4, 40 << 20).ok());
  CHECK(mem->free(a.value()).ok());
  CHECK(mem->free(c.value()).ok());
  CHECK(mem->npu_stats(3).in_use_bytes == 0);
  CHECK(mem->allocate_local(3, 60 << 20).ok());  // the space came back whole
}

TEST_CASE("mem.errors: out of memory on the slab path and for groups names the NPU that ran out") {
  auto drv = make_driver("n8", uint64_t{16} << 20);  // 8 pages per NPU
  auto mem = make_memory(drv.get(), small_config());
  std::vector<GlobalAddr> blocks;
  Status oom;
  for (int i = 0; i < 100000; ++i) {
    auto a = mem->allocate_local(1, 192 << 10);
    if (!a.ok()) {
      oom = a.status();
      break;
    }
    blocks.push_back(a.value());
  }
  CHECK(oom.code() == StatusCode::kOutOfMemory);
  CHECK(has(oom, "npu 1"));
  CHECK(has(oom, "a small block"));
  CHECK(has(oom, "asked 196608 bytes"));
  CHECK(blocks.size() == 8 * 10);  // 10 blocks of 192 KiB per 2 MiB page, 8 pages
  // An interleaved request over {0, 1} now fails on NPU 1 and leaves NPU 0 as it was.
  AllocRequest req;
  req.policy = Policy::kInterleaved;
  req.npus = {0, 1};
  req.bytes = 8 << 20;
  const uint64_t resident0 = mem->npu_stats(0).resident_bytes;
  auto il = mem->allocate(req);
  CHECK(il.status().code() == StatusCode::kOutOfMemory);
  CHECK(has(il.status(), "npu 1"));
  CHECK(has(il.status(), "interleaved"));
  CHECK(mem->npu_stats(0).resident_bytes == resident0);  // rolled back
  for (GlobalAddr a : blocks) REQUIRE(mem->free(a).ok());
  mem->flush_thread_cache();
  CHECK(mem->npu_stats(1).in_use_bytes == 0);
  CHECK(mem->allocate(req).ok());

  // The symmetric window is its own limit.
  MemConfig cfg = small_config();
  cfg.symmetric_heap_bytes = 8 << 20;
  auto mem2 = make_memory(drv.get(), cfg);
  AllocRequest sym;
  sym.policy = Policy::kSymmetric;
  sym.npus = {2, 3};
  sym.bytes = 6 << 20;
  auto s1 = mem2->allocate(sym);
  REQUIRE(s1.ok());
  auto s2 = mem2->allocate(sym);
  CHECK(s2.status().code() == StatusCode::kOutOfMemory);
  CHECK(has(s2.status(), "MEM_SYMMETRIC_HEAP_BYTES"));
}

TEST_CASE("mem.errors: double, unknown and interior frees are refused and corrupt nothing") {
  auto drv = make_driver("n8", uint64_t{64} << 20);
  auto mem = make_memory(drv.get(), small_config());
  auto small = mem->allocate_local(0, 100);
  auto other = mem->allocate_local(0, 100);
  auto large = mem->allocate_local(0, 1 << 20);
  AllocRequest own;
  own.npu = 0;
  own.bytes = 3 << 20;
  own.own_pages = true;
  auto pages = mem->allocate(own);
  REQUIRE(small.ok());
  REQUIRE(other.ok());
  REQUIRE(large.ok());
  REQUIRE(pages.ok());
  const std::vector<uint8_t> keep = pattern(77, 100);
  REQUIRE(mem->write(other.value(), keep.data(), 100).ok());

  // Interior addresses.
  Status s = mem->free(small.value() + 16);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(has(s, "not the start"));
  CHECK(has(s, to_string(small.value())));
  s = mem->free(large.value() + 4096);
  CHECK(has(s, "bytes into the large block"));
  s = mem->free(pages->base + 8192);
  CHECK(has(s, "8192 bytes into the local allocation"));

  // Double frees, on every path.
  REQUIRE(mem->free(small.value()).ok());
  s = mem->free(small.value());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(has(s, "already free"));
  REQUIRE(mem->free(large.value()).ok());
  s = mem->free(large.value());
  CHECK(has(s, "not allocated"));
  REQUIRE(mem->free(pages.value()).ok());
  s = mem->free(pages.value());
  CHECK(has(s, "not allocated"));

  // Never allocated: null, a block of a slab never handed out, free global space, beyond the
  // global space.
  CHECK(mem->free(GlobalAddr()).code() == StatusCode::kInvalidArgument);
  s = mem->free(other.value() + 100 * 112);  // a later block of the same slab
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(mem->free(GlobalAddr(uint64_t{1} << 40)).code() == StatusCode::kInvalidArgument);
  CHECK(mem->free(GlobalAddr(~uint64_t{0} - 15)).code() == StatusCode::kInvalidArgument);

  // Nothing was disturbed: the neighbour still holds its bytes, a fresh allocation of the
  // freed block's size gets a distinct, usable block, and accounting returns to zero.
  std::vector<uint8_t> back(100);
  REQUIRE(mem->read(other.value(), back.data(), 100).ok());
  CHECK(back == keep);
  auto again = mem->allocate_local(0, 100);
  REQUIRE(again.ok());
  CHECK(again.value() != other.value());
  CHECK(mem->free(again.value()).ok());
  CHECK(mem->free(other.value()).ok());
  mem->flush_thread_cache();
  CHECK(mem->npu_stats(0).in_use_bytes == 0);
  CHECK(mem->block_info(other.value()).status().code() == StatusCode::kNotFound);
}

TEST_CASE("mem.errors: bad requests name the field; a lost NPU says so") {
  auto drv = make_driver("n8", uint64_t{64} << 20);
  auto mem = make_memory(drv.get(), small_config());
  CHECK(has(mem->allocate_local(8, 64).status(), "npu 8 does not exist"));
  CHECK(has(mem->allocate_local(0, 0).status(), "size 0"));
  CHECK(has(mem->allocate_local(0, 64, 3).status(), "alignment 3"));
  AllocRequest r;
  r.policy = Policy::kInterleaved;
  r.bytes = 4 << 20;
  CHECK(has(mem->allocate(r).status(), "npus (the group) is empty"));
  r.npus = {1, 2, 1};
  CHECK(has(mem->allocate(r).status(), "npu 1 appears twice"));
  r.npus = {1, 2};
  r.grain_bytes = 3 << 20;
  CHECK(has(mem->allocate(r).status(), "grain_bytes"));
  r.policy = static_cast<Policy>(9);
  CHECK(has(mem->allocate(r).status(), "unknown policy"));

  dev::FaultSpec lost;
  lost.kind = dev::FaultKind::kNpuLost;
  lost.target = 5;
  dev::FaultId id;
  REQUIRE(drv->fault_inject(lost, &id).ok());
  auto a = mem->allocate_local(5, 1 << 20);
  CHECK(a.status().code() == StatusCode::kNpuLost);
  CHECK(has(a.status(), "npu 5"));
  auto b = mem->allocate_local(5, 64);
  CHECK(b.status().code() == StatusCode::kNpuLost);
  CHECK(mem->allocate_local(6, 64).ok());  // its neighbours are fine
}

TEST_CASE("mem.stats: per-NPU figures and JSON") {
  auto drv = make_driver("n8", uint64_t{64} << 20);
  auto mem = make_memory(drv.get(), small_config());
  auto a = mem->allocate_local(2, 1000);       // class 1024
  auto b = mem->allocate_local(2, 3 << 20);    // large: 48 grains
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  NpuMemStats s = mem->npu_stats(2);
  CHECK(s.npu == 2);
  CHECK(s.in_use_bytes == 1024 + (3u << 20));
  CHECK(s.thread_cached_bytes > 0);  // the rest of the refill batch
  CHECK(s.peak_in_use_bytes >= s.in_use_bytes);
  CHECK(s.committed_bytes == (16u << 20));
  CHECK(s.segments == 1);
  CHECK(s.resident_bytes == 3 * (2u << 20));  // one slab page + two large-heap pages
  CHECK(s.slab_pages == 1);
  CHECK(s.large_blocks == 1);
  CHECK(s.limit_bytes == (64u << 20));
  CHECK(s.free_bytes + s.in_use_bytes + s.thread_cached_bytes <= s.limit_bytes);
  const std::string json = mem->stats_json();
  CHECK(json.find("\"npu\":2") != std::string::npos);
  CHECK(json.find("\"npu\":3") == std::string::npos);  // untouched NPUs are left out
  for (const char* key : {"in_use_bytes", "peak", "free_bytes", "largest_free_block_bytes",
                          "committed_bytes", "segments", "resident_bytes", "page_bytes"})
    CHECK_MESSAGE(json.find(std::string("\"") + key + "\"") != std::string::npos, key);
  CHECK(mem->free(a.value()).ok());
  CHECK(mem->free(b.value()).ok());
  mem->flush_thread_cache();
  s = mem->npu_stats(2);
  CHECK(s.in_use_bytes == 0);
  CHECK(s.peak_in_use_bytes >= 1024 + (3u << 20));
  CHECK(mem->stats_json(false).find("\"npu\":7") != std::string::npos);
}
