// The public API (runtime/moe.h), used as an application would: only that header.
#include "runtime/moe.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

namespace {

std::unique_ptr<moe::Runtime> open_n8(moe::ExecutionMode mode = moe::ExecutionMode::kFunctional) {
  moe::RuntimeOptions options;
  options.supernode = "n8";
  options.mode = mode;
  auto rt = moe::Runtime::open(options);
  REQUIRE(rt.ok());
  return std::move(*rt);
}

// Doubles `n` floats at `addr` in place (a kernel body reading HBM through the host mapping).
void double_in_place(moe::Runtime& rt, moe::GlobalAddr addr, size_t n) {
  auto* p = static_cast<float*>(rt.memory().translate_host(addr));
  for (size_t i = 0; i < n; ++i) p[i] *= 2;
}

}  // namespace

TEST_CASE("rt.api: copy in, run a kernel, copy out, over a fabric copy, in modelled order") {
  auto rt = open_n8();
  constexpr size_t kN = 4096;
  auto a = rt->memory().allocate_local(3, kN * sizeof(float));
  auto b = rt->memory().allocate_local(5, kN * sizeof(float));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  std::vector<float> in(kN), out(kN, 0.0f);
  std::iota(in.begin(), in.end(), 1.0f);

  auto copy3 = moe::Stream::create(*rt, 3, moe::StreamKind::kCopy);
  auto fabric3 = moe::Stream::create(*rt, 3, moe::StreamKind::kFabric);
  auto copy5 = moe::Stream::create(*rt, 5, moe::StreamKind::kCopy);
  auto compute3 = moe::Stream::create(*rt, 3);
  REQUIRE((copy3.ok() && fabric3.ok() && copy5.ok() && compute3.ok()));
  CHECK((*copy3)->kind() == moe::StreamKind::kCopy);

  REQUIRE((*copy3)->copy_from_host(*a, in.data(), kN * sizeof(float)).ok());
  moe::Event copied;
  REQUIRE(copied.record(**copy3).ok());
  CHECK(copied.time().ns > 0);
  REQUIRE((*compute3)->wait(copied).ok());
  moe::Kernel k;
  k.name = "double";
  k.flops = kN;
  k.hbm_bytes = 2.0 * kN * sizeof(float);
  k.body = [&] { double_in_place(*rt, *a, kN); };
  REQUIRE((*compute3)->launch(k).ok());
  REQUIRE((*compute3)->synchronize().ok());
  CHECK((*compute3)->modelled_time().ns > copied.time().ns);

  moe::Event doubled;
  REQUIRE(doubled.record(**compute3).ok());
  REQUIRE((*fabric3)->wait(doubled).ok());
  REQUIRE((*fabric3)->copy(*b, *a, kN * sizeof(float)).ok());
  moe::Event moved;
  REQUIRE(moved.record(**fabric3).ok());
  CHECK(moved.time().ns > doubled.time().ns);
  REQUIRE((*copy5)->wait(moved).ok());
  REQUIRE((*copy5)->copy_to_host(out.data(), *b, kN * sizeof(float)).ok());
  REQUIRE((*copy5)->synchronize().ok());
  for (size_t i = 0; i < kN; ++i) REQUIRE(out[i] == 2 * in[i]);
  CHECK((*copy5)->modelled_time().ns > moved.time().ns);
}

TEST_CASE("rt.api: copies across pages of an interleaved range, and misuse is an error") {
  auto rt = open_n8();
  const uint64_t page = rt->memory().page_bytes();
  moe::AllocRequest req;
  req.policy = moe::Policy::kInterleaved;
  req.bytes = 3 * page;
  req.npus = {0, 1, 2};
  auto inter = rt->memory().allocate(req);
  REQUIRE(inter.ok());
  auto src = rt->memory().allocate_local(4, 3 * page);
  REQUIRE(src.ok());
  std::vector<uint8_t> bytes(3 * page);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 1);
  REQUIRE(rt->memory().write(*src, bytes.data(), bytes.size()).ok());

  auto fabric = moe::Stream::create(*rt, 4, moe::StreamKind::kFabric);
  REQUIRE(fabric.ok());
  // Unaligned: the copy spans all three NPUs' pages.
  REQUIRE((*fabric)->copy(moe::GlobalAddr(inter->base.value + 100), moe::GlobalAddr(src->value + 100), 3 * page - 200).ok());
  REQUIRE((*fabric)->synchronize().ok());
  std::vector<uint8_t> back(3 * page - 200);
  REQUIRE(rt->memory().read(moe::GlobalAddr(inter->base.value + 100), back.data(), back.size()).ok());
  CHECK(std::memcmp(back.data(), bytes.data() + 100, back.size()) == 0);

  // A copy stream reaches only its own NPU's HBM: the message names the NPU to use.
  auto copy0 = moe::Stream::create(*rt, 0, moe::StreamKind::kCopy);
  REQUIRE(copy0.ok());
  moe::Status s = (*copy0)->copy_from_host(inter->base, bytes.data(), 2 * page);
  CHECK(s.code() == moe::StatusCode::kInvalidArgument);
  CHECK(s.message().find("NPU 1") != std::string::npos);
  // Wrong stream kinds, unmapped and overlapping ranges, a null host pointer.
  moe::Kernel k;
  CHECK((*copy0)->launch(k).code() == moe::StatusCode::kFailedPrecondition);
  CHECK((*fabric)->copy_from_host(*src, bytes.data(), 16).code() ==
        moe::StatusCode::kFailedPrecondition);
  CHECK((*copy0)->copy_to_host(bytes.data(), moe::GlobalAddr(uint64_t{1} << 62), 16).code() ==
        moe::StatusCode::kInvalidArgument);
  CHECK((*fabric)->copy(moe::GlobalAddr(src->value + 8), *src, 64).code() == moe::StatusCode::kInvalidArgument);
  CHECK((*copy0)->copy_to_host(nullptr, inter->base, 16).code() ==
        moe::StatusCode::kInvalidArgument);
  // Nothing failed on the streams themselves.
  CHECK((*copy0)->synchronize().ok());
}

TEST_CASE("rt.api: a collective in the runtime's mode, ordered before a stream by an event") {
  auto rt = open_n8();
  auto comm = moe::open_communicator(*rt);
  REQUIRE(comm.ok());
  REQUIRE((*comm)->size() == 8);
  moe::AllocRequest req;
  req.policy = moe::Policy::kSymmetric;
  req.bytes = 64 * sizeof(float);
  req.npus = moe::all_devices(*rt);
  auto sym = rt->memory().allocate(req);
  REQUIRE(sym.ok());
  auto addrs = (*comm)->addresses_of(*sym);
  REQUIRE(addrs.ok());
  for (uint32_t r = 0; r < 8; ++r) {
    std::vector<float> v(64, float(r + 1));
    REQUIRE(rt->memory().write((*addrs)[r], v.data(), v.size() * sizeof(float)).ok());
  }
  auto result = (*comm)->all_reduce(*addrs, *addrs, 64, moe::DataType::kFloat32, moe::ReduceOp::kSum);
  REQUIRE(result.ok());
  for (uint32_t r = 0; r < 8; ++r) {
    std::vector<float> v(64);
    REQUIRE(rt->memory().read((*addrs)[r], v.data(), v.size() * sizeof(float)).ok());
    CHECK(v[0] == 36.0f);
    CHECK(v[63] == 36.0f);
  }
  moe::Event reduced;
  reduced.record_at(result->end);
  auto compute = moe::Stream::create(*rt, 2);
  REQUIRE(compute.ok());
  REQUIRE((*compute)->wait(reduced).ok());
  moe::Kernel k;
  k.name = "after";
  k.flops = 1e6;
  REQUIRE((*compute)->launch(k).ok());
  REQUIRE((*compute)->synchronize().ok());
  CHECK((*compute)->modelled_time().ns > result->end.ns);

  moe::RuntimeOptions bare;
  bare.supernode = "n8";
  bare.open_transport = false;
  auto no_transport = moe::Runtime::open(bare);
  REQUIRE(no_transport.ok());
  CHECK(moe::open_communicator(**no_transport).status().code() ==
        moe::StatusCode::kFailedPrecondition);
  const moe::dev::NpuId bad[] = {0, 99};
  CHECK(moe::open_communicator(*rt, bad).status().code() == moe::StatusCode::kOutOfRange);
}

TEST_CASE("rt.api: a captured copy-and-kernel graph replays like eager execution") {
  auto rt = open_n8();
  auto a = rt->memory().allocate_local(1, 256 * sizeof(float));
  REQUIRE(a.ok());
  std::vector<float> in(256, 1.5f), out(256, 0.0f);
  auto copy = moe::Stream::create(*rt, 1, moe::StreamKind::kCopy);
  auto compute = moe::Stream::create(*rt, 1);
  REQUIRE((copy.ok() && compute.ok()));
  moe::Stream* streams[] = {copy->get(), compute->get()};
  moe::Graph graph;
  REQUIRE(graph.capture_begin(streams).ok());
  REQUIRE((*copy)->copy_from_host(*a, in.data(), 256 * sizeof(float)).ok());
  moe::Event in_done;
  REQUIRE(in_done.record(**copy).ok());
  REQUIRE((*compute)->wait(in_done).ok());
  moe::Kernel k;
  k.name = "double";
  k.flops = 256;
  k.body = [&] { double_in_place(*rt, *a, 256); };
  REQUIRE((*compute)->launch(k).ok());
  moe::Event kernel_done;
  REQUIRE(kernel_done.record(**compute).ok());
  REQUIRE((*copy)->wait(kernel_done).ok());
  REQUIRE((*copy)->copy_to_host(out.data(), *a, 256 * sizeof(float)).ok());
  REQUIRE(graph.capture_end().ok());
  CHECK(graph.num_ops() == 3);

  for (int step = 0; step < 3; ++step) {
    const double before = (*copy)->modelled_time().ns;
    in.assign(256, float(step + 1));
    REQUIRE(graph.replay().ok());
    REQUIRE((*copy)->synchronize().ok());
    REQUIRE((*compute)->synchronize().ok());
    CHECK(out[0] == 2.0f * float(step + 1));
    CHECK(out[255] == 2.0f * float(step + 1));
    CHECK((*copy)->modelled_time().ns > before);
  }
}

TEST_CASE("rt.api: timing mode charges copies the same modelled time and moves no bytes") {
  double ns[2] = {0, 0};
  for (int m = 0; m < 2; ++m) {
    auto rt = open_n8(m == 0 ? moe::ExecutionMode::kFunctional : moe::ExecutionMode::kTiming);
    auto a = rt->memory().allocate_local(2, 1 << 20);
    REQUIRE(a.ok());
    std::vector<uint8_t> host(1 << 20, 0xab), back(1 << 20, 0);
    auto copy = moe::Stream::create(*rt, 2, moe::StreamKind::kCopy);
    REQUIRE(copy.ok());
    REQUIRE((*copy)->copy_from_host(*a, host.data(), host.size()).ok());
    REQUIRE((*copy)->copy_to_host(back.data(), *a, back.size()).ok());
    REQUIRE((*copy)->synchronize().ok());
    ns[m] = (*copy)->modelled_time().ns;
    CHECK(back[12345] == (m == 0 ? 0xab : 0));
  }
  CHECK(ns[0] > 0);
  CHECK(ns[0] == doctest::Approx(ns[1]));
}

TEST_CASE("rt.api: statistics of every layer as JSON; a bad supernode is refused") {
  auto rt = open_n8();
  auto a = rt->memory().allocate_local(0, 1024);
  REQUIRE(a.ok());
  const std::string stats = rt->stats_json();
  CHECK(stats.find("\"devices\":8") != std::string::npos);
  CHECK(stats.find("\"memory\"") != std::string::npos);
  CHECK(stats.find("\"placement\"") != std::string::npos);
  CHECK(stats.find("\"counters\"") != std::string::npos);

  moe::RuntimeOptions options;
  options.supernode = "no-such-supernode";
  auto bad = moe::Runtime::open(options);
  CHECK(!bad.ok());
  CHECK(bad.status().message().find("no-such-supernode") != std::string::npos);
}

TEST_CASE("rt.host: the runtime places staging buffers and dispatch threads on a synthetic "
          "multi-NUMA host") {
  moe::RuntimeOptions options;
  options.supernode = "n16";
  options.host.synthetic = "pack:2 numa:4 core:8";
  auto opened = moe::Runtime::open(options);
  REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
  moe::Runtime& rt = **opened;
  const auto& plan = rt.placement();
  REQUIRE(plan.npus.size() == 16);
  REQUIRE(plan.nodes.size() == 8);
  // Host memory opens on the first staging buffer, not at open; a bad NPU does not open it.
  CHECK(!rt.host_memory_opened());
  CHECK(rt.stats_json().find("\"host_memory_opened\":false") != std::string::npos);
  CHECK(rt.allocate_staging(16, 4096).status().code() == moe::StatusCode::kOutOfRange);
  CHECK(!rt.host_memory_opened());
  std::set<uint32_t> nodes_used;
  for (uint32_t npu = 0; npu < 16; ++npu) {
    auto staging = rt.allocate_staging(npu, 4096);
    REQUIRE(staging.ok());
    CHECK(staging->numa_node() == plan.npus[npu].numa_node);
    CHECK(staging->placement() == moe::mem::Placement::kSynthetic);
    nodes_used.insert(staging->numa_node());
  }
  CHECK(nodes_used.size() > 1);  // the supernode's CPUs spread over the host's nodes
  CHECK(rt.host_memory_opened());
  CHECK(rt.stats_json().find("\"host_memory_opened\":true") != std::string::npos);
  CHECK(rt.allocate_staging(16, 4096).status().code() == moe::StatusCode::kOutOfRange);

  // Every NPU's function runs once, on its planned dispatch thread; NPUs of one plan thread
  // share an OS thread, NPUs of different plan threads do not.
  std::vector<std::thread::id> ran_on(16);
  std::atomic<int> calls{0};
  const std::vector<moe::dev::NpuId> npus = moe::all_devices(rt);
  REQUIRE(rt.for_each_device(npus, [&](moe::dev::NpuId npu) {
              ran_on[npu] = std::this_thread::get_id();
              ++calls;
              return moe::Status();
            }).ok());
  CHECK(calls == 16);
  for (uint32_t a = 0; a < 16; ++a)
    for (uint32_t b = 0; b < 16; ++b)
      CHECK((ran_on[a] == ran_on[b]) == (plan.npus[a].thread == plan.npus[b].thread));
  CHECK(ran_on[0] != std::this_thread::get_id());

  // The first error, in NPU order, comes back; a nested call is refused, not deadlocked.
  moe::Status nested;
  std::mutex mu;
  moe::Status s = rt.for_each_device(npus, [&](moe::dev::NpuId npu) {
    if (npu == 0) {
      std::lock_guard<std::mutex> lock(mu);
      nested = rt.for_each_device(npus, [](moe::dev::NpuId) { return moe::Status(); });
    }
    if (npu == 5 || npu == 9)
      return moe::make_error(moe::StatusCode::kInternal, "npu %u failed", npu);
    return moe::Status();
  });
  CHECK(s.message().find("npu 5") != std::string::npos);
  CHECK(nested.code() == moe::StatusCode::kFailedPrecondition);
  const moe::dev::NpuId bad[] = {3, 40};
  CHECK(rt.for_each_device(bad, [](moe::dev::NpuId) { return moe::Status(); }).code() ==
        moe::StatusCode::kOutOfRange);
  CHECK(rt.stats_json().find("\"threads_started\":true") != std::string::npos);

  moe::RuntimeOptions both = options;
  both.host.topology_xml = "/nonexistent.xml";
  CHECK(moe::Runtime::open(both).status().code() == moe::StatusCode::kInvalidArgument);
}

TEST_CASE("rt.host: the first staging buffers, asked from several threads at once, open host "
          "memory once and land on their NPUs' nodes") {
  moe::RuntimeOptions options;
  options.supernode = "n16";
  options.open_transport = false;
  options.host.synthetic = "pack:2 numa:4 core:8";
  auto opened = moe::Runtime::open(options);
  REQUIRE_MESSAGE(opened.ok(), opened.status().to_string());
  moe::Runtime& rt = **opened;
  REQUIRE(!rt.host_memory_opened());
  constexpr int kThreads = 4;
  std::vector<moe::StatusOr<moe::mem::StagingBuffer>> got;
  for (int i = 0; i < kThreads; ++i) got.emplace_back(moe::mem::StagingBuffer());
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      got[i] = rt.allocate_staging(static_cast<moe::dev::NpuId>(i * 4), 8192);
    });
  for (auto& t : threads) t.join();
  CHECK(rt.host_memory_opened());
  for (int i = 0; i < kThreads; ++i) {
    CAPTURE(i);
    REQUIRE_MESSAGE(got[i].ok(), got[i].status().to_string());
    CHECK(got[i]->numa_node() == rt.placement().npus[i * 4].numa_node);
    CHECK(got[i]->bytes() == 8192);
    std::memset(got[i]->data(), i + 1, 8192);  // the memory is usable
  }
  for (int i = 0; i < kThreads; ++i)
    CHECK(static_cast<unsigned char*>(got[i]->data())[8191] == i + 1);
}
