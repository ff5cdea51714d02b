// Host memory: mimalloc buffers, and staging buffers placed on a NUMA node through hwloc,
// with the fallbacks reported (one-node host, synthetic topology) and bad nodes refused.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "memory/host_memory.h"

using namespace moe;
using namespace moe::mem;

TEST_CASE("mem.host: mimalloc buffers honour alignment and hold their bytes") {
  for (size_t align : {size_t{16}, size_t{64}, size_t{4096}, size_t{1} << 16}) {
    HostBuffer b(host_alloc(100000, align));
    REQUIRE(b != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(b.get()) % align == 0);
    std::memset(b.get(), 0x5A, 100000);
    CHECK(static_cast<uint8_t*>(b.get())[99999] == 0x5A);
  }
  host_free(nullptr);  // ignored
}

TEST_CASE("mem.host: staging buffers on this host: bound when binding is asked for, else reported") {
  auto hm = HostMemory::create();
  REQUIRE(hm.ok());
  HostMemory& host = *hm.value();
  REQUIRE(host.num_numa_nodes() >= 1);
  CHECK_FALSE(host.synthetic());
  auto os = host.os_index(0);
  REQUIRE(os.ok());

  auto b = host.allocate_staging(1 << 20, 0);
  REQUIRE(b.ok());
  CHECK(b->bytes() == (1u << 20));
  CHECK(b->numa_node() == 0);
  std::memset(b->data(), 1, b->bytes());
  if (host.num_numa_nodes() == 1) {
    CHECK(b->placement() == Placement::kSingleNode);
    CHECK(b->note().find("one NUMA node") != std::string::npos);
  } else {
    CHECK((b->placement() == Placement::kBound || b->placement() == Placement::kNotPermitted));
  }

  // Asked to bind even on one node: either bound (and the OS agrees which node), or the
  // refusal is reported with its reason and the buffer still works.
  HostMemoryOptions opts;
  opts.bind_single_node = true;
  auto hb = HostMemory::create(opts);
  REQUIRE(hb.ok());
  auto bound = hb.value()->allocate_staging(3 << 20, 0);
  REQUIRE(bound.ok());
  std::memset(bound->data(), 2, bound->bytes());
  if (bound->placement() == Placement::kBound) {
    CHECK(reinterpret_cast<uintptr_t>(bound->data()) % 4096 == 0);
    auto node = hb.value()->bound_node(bound->data(), bound->bytes());
    REQUIRE_MESSAGE(node.ok(), node.status().to_string());
    CHECK(node.value() == 0);
    CHECK(bound->note().find("hwloc_alloc_membind") != std::string::npos);
  } else {
    CHECK(bound->placement() == Placement::kNotPermitted);
    CHECK(bound->note().find("refused") != std::string::npos);
  }
  // Move and reset free the buffer once.
  StagingBuffer moved = std::move(bound.value());
  CHECK(bound->data() == nullptr);
  CHECK(moved.data() != nullptr);
  moved.reset();
  CHECK(moved.data() == nullptr);

  auto none = host.allocate_staging(4096, host.num_numa_nodes());
  CHECK(none.status().code() == StatusCode::kOutOfRange);
  CHECK(none.status().message().find("does not exist") != std::string::npos);
  CHECK(host.allocate_staging(0, 0).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("mem.host: a synthetic two-socket topology resolves nodes but binds nothing") {
  HostMemoryOptions opts;
  opts.synthetic = "pack:2 numa:1 core:2 pu:1";
  auto hm = HostMemory::create(opts);
  REQUIRE_MESSAGE(hm.ok(), hm.status().to_string());
  HostMemory& host = *hm.value();
  CHECK(host.synthetic());
  CHECK(host.num_numa_nodes() == 2);
  auto b = host.allocate_staging(64 << 10, 1);
  REQUIRE(b.ok());
  CHECK(b->placement() == Placement::kSynthetic);
  CHECK(b->numa_node() == 1);
  CHECK(b->note().find("NUMA node 1") != std::string::npos);
  std::memset(b->data(), 3, b->bytes());
  CHECK(host.allocate_staging(4096, 2).status().code() == StatusCode::kOutOfRange);
  CHECK(host.bound_node(b->data(), b->bytes()).status().code() == StatusCode::kUnsupported);

  HostMemoryOptions bad;
  bad.synthetic = "this is not a topology";
  CHECK(HostMemory::create(bad).status().code() == StatusCode::kInvalidArgument);
}
