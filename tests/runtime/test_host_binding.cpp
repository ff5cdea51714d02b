// Binding threads and staging memory: refused (threads) or reported unbound (memory) on
// synthetic hosts; applied and read back through hwloc on the real host.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "runtime/host/binding.h"
#include "runtime/host/host_topology.h"

namespace {

using moe::StatusCode;
using moe::rt::host::alloc_on_node;
using moe::rt::host::area_binding;
using moe::rt::host::area_location;
using moe::rt::host::bind_current_thread;
using moe::rt::host::CpuSet;
using moe::rt::host::current_thread_binding;
using moe::rt::host::free_on_node;
using moe::rt::host::HostTopology;
using moe::rt::host::NodeBuffer;

HostTopology load(moe::StatusOr<HostTopology> t) {
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(t).value();
}

// Restores the calling thread's binding when the test ends, however it ends.
class BindingGuard {
 public:
  explicit BindingGuard(const HostTopology& t) : topology_(t) {
    auto b = current_thread_binding(t);
    REQUIRE_MESSAGE(b.ok(), b.status().to_string());
    original_ = b.value();
  }
  ~BindingGuard() { bind_current_thread(topology_, original_).ignore(); }
  const CpuSet& original() const { return original_; }

 private:
  const HostTopology& topology_;
  CpuSet original_;
};

}  // namespace

TEST_CASE("rt.host.binding: a synthetic host plans but does not bind threads") {
  HostTopology t = load(HostTopology::from_synthetic("pack:2 numa:2 core:4 pu:1"));
  moe::Status s = bind_current_thread(t, CpuSet({0}));
  CHECK(s.code() == StatusCode::kUnsupported);
  CHECK(s.message().find("not this system") != std::string::npos);
  CHECK(current_thread_binding(t).status().code() == StatusCode::kUnsupported);
  HostTopology empty;
  CHECK(bind_current_thread(empty, CpuSet({0})).code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("rt.host.binding: staging memory on a synthetic host falls back and says so") {
  HostTopology t = load(HostTopology::from_synthetic("pack:2 numa:2 core:4 pu:1"));
  auto a = alloc_on_node(t, 3, 1 << 16);
  REQUIRE_MESSAGE(a.ok(), a.status().to_string());
  CHECK(a->ptr != nullptr);
  CHECK(a->bytes == (1u << 16));
  CHECK(a->numa_node == 3);
  CHECK_FALSE(a->bound);
  CHECK(a->how.find("not this system") != std::string::npos);
  std::memset(a->ptr, 0x5a, a->bytes);  // usable (ASAN checks the extent)
  CHECK(area_binding(t, a->ptr, a->bytes).status().code() == StatusCode::kUnsupported);
  CHECK(area_location(t, a->ptr, a->bytes).status().code() == StatusCode::kUnsupported);
  free_on_node(t, *a);
  CHECK(a->ptr == nullptr);
  free_on_node(t, *a);  // no-op on an empty allocation

  auto no_node = alloc_on_node(t, 4, 4096);
  CHECK(no_node.status().code() == StatusCode::kOutOfRange);
  CHECK(no_node.status().message().find("4 NUMA node(s)") != std::string::npos);
  CHECK(alloc_on_node(t, 0, 0).status().code() == StatusCode::kInvalidArgument);
  auto too_big = alloc_on_node(t, 0, size_t{1} << 40);  // synthetic nodes hold 1 GiB
  CHECK(too_big.status().code() == StatusCode::kOutOfMemory);
  CHECK(too_big.status().message().find("1.00 GiB") != std::string::npos);
  HostTopology empty;
  CHECK(alloc_on_node(empty, 0, 4096).status().code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("rt.host.binding: the real host binds this thread to each core and reads it back") {
  HostTopology t = load(HostTopology::discover());
  BindingGuard guard(t);
  CHECK_FALSE(guard.original().empty());
  const auto& cores = t.summary().cores;
  REQUIRE(!cores.empty());
  // Every core (at most 8 of them, spread over the host).
  size_t step = cores.size() > 8 ? cores.size() / 8 : 1;
  for (size_t i = 0; i < cores.size(); i += step) {
    CAPTURE(i);
    moe::Status s = bind_current_thread(t, cores[i].cpus);
    REQUIRE_MESSAGE(s.ok(), s.to_string());
    auto now = current_thread_binding(t);
    REQUIRE(now.ok());
    CHECK(now.value() == cores[i].cpus);
  }
  // Restoring works, and is what the guard will do again.
  REQUIRE(bind_current_thread(t, guard.original()).ok());
  CHECK(current_thread_binding(t).value() == guard.original());

  CHECK(bind_current_thread(t, CpuSet()).code() == StatusCode::kInvalidArgument);
  moe::Status missing = bind_current_thread(t, CpuSet({100000}));
  CHECK(missing.code() == StatusCode::kInvalidArgument);
  CHECK(missing.message().find("PU 100000") != std::string::npos);
}

TEST_CASE("rt.host.binding: staging memory on the real host lands on the node asked for") {
  HostTopology t = load(HostTopology::discover());
  constexpr size_t kBytes = 4 << 20;
  for (uint32_t node = 0; node < t.summary().numa_nodes.size(); ++node) {
    if (t.summary().numa_nodes[node].memory_bytes == 0) continue;  // nothing to place there
    CAPTURE(node);
    auto a = alloc_on_node(t, node, kBytes);
    REQUIRE_MESSAGE(a.ok(), a.status().to_string());
    REQUIRE_MESSAGE(a->bound, a->how);
    auto binding = area_binding(t, a->ptr, a->bytes);
    REQUIRE_MESSAGE(binding.ok(), binding.status().to_string());
    CHECK(binding->policy == "bind");
    CHECK(binding->numa_nodes == std::vector<uint32_t>{node});
    std::memset(a->ptr, 1, a->bytes);  // touch every page so it exists somewhere
    auto where = area_location(t, a->ptr, a->bytes);
    REQUIRE_MESSAGE(where.ok(), where.status().to_string());
    CHECK(where.value() == std::vector<uint32_t>{node});
    free_on_node(t, *a);
  }
  CHECK(area_binding(t, nullptr, 16).status().code() == StatusCode::kInvalidArgument);
  CHECK(area_location(t, &t, 0).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("rt.host.binding: NodeBuffer owns one allocation and moves") {
  HostTopology t = load(HostTopology::from_synthetic("numa:2 core:2 pu:1"));
  auto b = NodeBuffer::allocate(t, 1, 8192);
  REQUIRE_MESSAGE(b.ok(), b.status().to_string());
  void* p = b->data();
  CHECK(p != nullptr);
  CHECK(b->size() == 8192);
  CHECK(b->allocation().numa_node == 1);
  NodeBuffer moved = std::move(b.value());
  CHECK(moved.data() == p);
  CHECK(b->data() == nullptr);
  static_cast<char*>(moved.data())[8191] = 7;
  NodeBuffer other;
  other = std::move(moved);
  CHECK(other.data() == p);
  other.reset();
  CHECK(other.data() == nullptr);
  CHECK(NodeBuffer::allocate(t, 2, 8192).status().code() == StatusCode::kOutOfRange);
}
