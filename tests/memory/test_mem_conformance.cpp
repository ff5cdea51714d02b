// One conformance suite run over every placement policy (and both local paths): the same
// contract checked for each: sizes and parts, bytes written are read back from the right
// place, pages sit on the NPUs the policy promises, addresses resolve to their allocation,
// frees are checked, and everything returns to zero afterwards.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/memory/mem_test_util.h"

using namespace moe;
using namespace moe::mem;
using namespace moe::mem::testing;

namespace {

// n16: 2 nodes of 8 NPUs. Each policy type says how to build a request and which sizes to try.
struct LocalSmall {
  static constexpr const char* kName = "local (slab)";
  static std::vector<uint64_t> sizes() { return {1, 16, 100, 4096, 70000, 256 << 10}; }
  static AllocRequest request(uint64_t bytes) {
    AllocRequest r;
    r.policy = Policy::kLocal;
    r.npu = 5;
    r.bytes = bytes;
    return r;
  }
};
struct LocalLarge {
  static constexpr const char* kName = "local (large heap)";
  static std::vector<uint64_t> sizes() { return {(256 << 10) + 1, 1 << 20, (3 << 20) + 12345, 9 << 20}; }
  static AllocRequest request(uint64_t bytes) {
    AllocRequest r = LocalSmall::request(bytes);
    r.npu = 9;
    return r;
  }
};
struct LocalOwnPages {
  static constexpr const char* kName = "local (own pages)";
  static std::vector<uint64_t> sizes() { return {64, 2 << 20, (5 << 20) + 7}; }
  static AllocRequest request(uint64_t bytes) {
    AllocRequest r = LocalSmall::request(bytes);
    r.own_pages = true;
    return r;
  }
};
struct Interleaved {
  static constexpr const char* kName = "interleaved";
  static std::vector<uint64_t> sizes() { return {100, 4 << 20, (11 << 20) + 5, 24 << 20}; }
  static AllocRequest request(uint64_t bytes) {
    AllocRequest r;
    r.policy = Policy::kInterleaved;
    r.npus = {2, 11, 7};
    r.grain_bytes = 4 << 20;  // two pages per chunk
    r.bytes = bytes;
    return r;
  }
};
struct Symmetric {
  static constexpr const char* kName = "symmetric";
  static std::vector<uint64_t> sizes() { return {256, 2 << 20, (6 << 20) + 1}; }
  static AllocRequest request(uint64_t bytes) {
    AllocRequest r;
    r.policy = Policy::kSymmetric;
    r.npus = {0, 3, 8, 15};
    r.bytes = bytes;
    return r;
  }
};
struct Replicated {
  static constexpr const char* kName = "replicated";
  static std::vector<uint64_t> sizes() { return {512, (3 << 20) + 100}; }
  static AllocRequest request(uint64_t bytes) {
    AllocRequest r;
    r.policy = Policy::kReplicated;
    r.npus = {1, 4, 12};
    r.bytes = bytes;
    return r;
  }
};

// The NPU the policy promises for byte `offset` of part `part`.
dev::NpuId expected_npu(const Allocation& a, const AllocRequest& req, size_t part, uint64_t offset) {
  switch (a.policy) {
    case Policy::kLocal: return req.npu;
    case Policy::kInterleaved: return req.npus[(offset / a.grain_bytes) % req.npus.size()];
    default: return a.parts[part].npu;
  }
}

}  // namespace

TEST_CASE_TEMPLATE("mem.conformance: every policy keeps the allocation contract", P, LocalSmall,
                   LocalLarge, LocalOwnPages, Interleaved, Symmetric, Replicated) {
  const std::string policy_name = P::kName;
  CAPTURE(policy_name);
  auto drv = make_driver("n16", uint64_t{256} << 20);
  auto mem = make_memory(drv.get(), small_config());
  const uint64_t page = mem->page_bytes();

  std::vector<std::pair<Allocation, AllocRequest>> live;
  uint64_t tag = 1;
  for (uint64_t bytes : P::sizes()) {
    CAPTURE(bytes);
    const AllocRequest req = P::request(bytes);
    auto got = mem->allocate(req);
    REQUIRE_MESSAGE(got.ok(), got.status().to_string());
    const Allocation& a = got.value();
    CHECK(a.valid());
    CHECK(a.bytes == bytes);
    CHECK(a.policy == req.policy);
    CHECK(a.base.value % 16 == 0);
    REQUIRE(!a.parts.empty());
    if (a.policy == Policy::kInterleaved) {
      uint64_t sum = 0;
      for (const auto& p : a.parts) sum += p.bytes;
      CHECK(sum == bytes);
    } else if (a.policy == Policy::kLocal) {
      CHECK(a.parts.size() == 1);
      CHECK(a.parts[0].addr == a.base);
    } else {
      CHECK(a.parts.size() == req.npus.size());
      for (size_t i = 0; i < a.parts.size(); ++i) {
        CHECK(a.parts[i].npu == req.npus[i]);
        CHECK(a.parts[i].bytes == bytes);
      }
      CHECK(a.base == a.parts[0].addr);
    }

    // Data: written through one path, read back through another, per part.
    const auto data = pattern(tag, bytes);
    REQUIRE(mem->write_all(a, 0, data.data(), bytes).ok());
    const size_t nparts = (a.policy == Policy::kSymmetric || a.policy == Policy::kReplicated) ? a.parts.size() : 1;
    for (size_t part = 0; part < nparts; ++part) {
      const GlobalAddr base = nparts == 1 ? a.base : a.parts[part].addr;
      std::vector<uint8_t> back(bytes);
      REQUIRE(mem->read(base, back.data(), bytes).ok());
      CHECK(first_mismatch(back.data(), tag, bytes) == bytes);
      // Placement and translation, page by page.
      for (uint64_t off = 0; off < bytes; off += std::min<uint64_t>(page, bytes - off)) {
        dev::DevicePtr where;
        REQUIRE(mem->translate(base + off, &where));
        CHECK(where.npu == expected_npu(a, req, part, off));
        const auto* host = static_cast<const uint8_t*>(mem->translate_host(base + off));
        REQUIRE(host != nullptr);
        CHECK(*host == pattern_byte(tag, off));
        const uint64_t span = std::min(bytes - off, mem->contiguous_bytes(base + off));
        CHECK(host[span - 1] == pattern_byte(tag, off + span - 1));
        auto located = mem->locate(base + off);
        REQUIRE(located.ok());
        CHECK(located->offset == where.offset);
      }
      // The address resolves to its allocation from any byte inside.
      auto info = mem->block_info(base + (bytes - 1));
      REQUIRE_MESSAGE(info.ok(), info.status().to_string());
      CHECK(info->start == base);
      CHECK(info->bytes >= bytes);
      CHECK(info->policy == req.policy);
      CHECK(info->allocation_base == a.base);
    }
    if (a.policy == Policy::kSymmetric) {
      // The same offset in every member's window: addresses differ by a fixed stride per NPU.
      const uint64_t stride = (a.parts[1].addr - a.parts[0].addr) / (a.parts[1].npu - a.parts[0].npu);
      for (const auto& p : a.parts) {
        CHECK(p.addr.value == a.parts[0].addr.value + (p.npu - a.parts[0].npu) * stride);
        auto sa = mem->symmetric_addr(a, p.npu);
        REQUIRE(sa.ok());
        CHECK(sa.value() == p.addr);
      }
      CHECK(mem->symmetric_addr(a, 6).status().code() == StatusCode::kInvalidArgument);
    }
    if (a.policy == Policy::kReplicated) {
      CHECK(mem->replica_for(a, 4) == a.parts[1].addr);   // its own copy
      CHECK(mem->replica_for(a, 6) == a.parts[0].addr);   // node 0: npu 1's copy
      CHECK(mem->replica_for(a, 14) == a.parts[2].addr);  // node 1: npu 12's copy
    }
    live.emplace_back(a, req);
    ++tag;
  }

  // Live allocations never overlap, in any part.
  std::map<uint64_t, uint64_t> spans;
  for (const auto& [a, req] : live) {
    for (const auto& p : a.parts) {
      const uint64_t len = a.policy == Policy::kInterleaved ? a.bytes : a.bytes;
      const uint64_t start = a.policy == Policy::kInterleaved ? a.base.value : p.addr.value;
      if (spans.count(start)) continue;  // interleaved parts share one range
      spans[start] = len;
    }
  }
  uint64_t prev_end = 0;
  for (const auto& [start, len] : spans) {
    CHECK(start >= prev_end);
    prev_end = start + len;
  }
  // Every allocation still holds its own bytes after the others were written.
  tag = 1;
  for (const auto& [a, req] : live) {
    std::vector<uint8_t> back(a.bytes);
    REQUIRE(mem->read(a.base, back.data(), a.bytes).ok());
    CHECK(first_mismatch(back.data(), tag, a.bytes) == a.bytes);
    ++tag;
  }

  // Frees: an interior address and a group's non-base part are refused; the base frees;
  // a second free is refused and names the address.
  for (const auto& [a, req] : live) {
    if (a.bytes > 64) {
      Status interior = mem->free(a.base + 32);
      CHECK(interior.code() == StatusCode::kInvalidArgument);
      CHECK(interior.message().find(to_string(a.base + 32)) != std::string::npos);
    }
    if (a.parts.size() > 1 && a.policy != Policy::kInterleaved) {
      Status part = mem->free(a.parts[1].addr);
      CHECK(part.code() == StatusCode::kInvalidArgument);
      CHECK(part.message().find("free the allocation's base") != std::string::npos);
    }
    REQUIRE(mem->free(a).ok());
    Status again = mem->free(a);
    CHECK(again.code() == StatusCode::kInvalidArgument);
    CHECK(again.message().find("not allocated") != std::string::npos);
    if (a.policy != Policy::kLocal || req.own_pages) {
      dev::DevicePtr where;
      CHECK_FALSE(mem->translate(a.base, &where));  // its pages are gone
    }
  }
  mem->flush_thread_cache();
  for (dev::NpuId n = 0; n < mem->num_npus(); ++n) {
    const NpuMemStats s = mem->npu_stats(n);
    CHECK(s.in_use_bytes == 0);
    CHECK(s.thread_cached_bytes == 0);
    CHECK(s.large_blocks == 0);
    CHECK(s.policy_pages == 0);
    CHECK(s.committed_bytes <= (16u << 20));  // at most the one retained segment
  }
}

TEST_CASE_TEMPLATE("mem.conformance: alignment requests are honoured", P, LocalSmall, LocalLarge,
                   LocalOwnPages, Interleaved, Symmetric, Replicated) {
  const std::string policy_name = P::kName;
  CAPTURE(policy_name);
  auto drv = make_driver("n16", uint64_t{256} << 20);
  auto mem = make_memory(drv.get(), small_config());
  for (uint64_t align : {uint64_t{64}, uint64_t{4096}, uint64_t{1} << 20, uint64_t{4} << 20}) {
    CAPTURE(align);
    AllocRequest req = P::request(P::sizes().front() + 8);
    req.alignment = align;
    auto a = mem->allocate(req);
    REQUIRE_MESSAGE(a.ok(), a.status().to_string());
    for (const auto& p : a->parts) CHECK(p.addr.value % align == 0);
    CHECK(mem->free(a.value()).ok());
  }
  AllocRequest bad = P::request(100);
  bad.alignment = 48;
  CHECK(mem->allocate(bad).status().code() == StatusCode::kInvalidArgument);
}
