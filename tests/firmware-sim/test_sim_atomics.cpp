// Atomics: real 64-bit operations at the destination, a round trip of modelled latency,
// kStore ordered after the queue's earlier transfers to the same NPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <thread>

#include "tests/firmware-sim/sim_test_util.h"

using namespace simtest;
using moe::StatusCode;
using moe::dev::AtomicOp;
using moe::dev::EngineKind;

TEST_CASE("sim.atomics: fetch_add from many NPUs and threads sums exactly; olds are distinct") {
  auto drv = make_driver("n8");
  Buffer counter = make_buffer(*drv, 0, 4096);
  constexpr int kPerNpu = 200;
  std::vector<std::vector<moe::dev::Completion>> results(8);
  std::vector<std::thread> threads;
  for (uint32_t npu = 0; npu < 8; ++npu) {
    threads.emplace_back([&, npu] {
      // Only CHECK here: a REQUIRE would throw on a worker thread.
      moe::dev::QueueId q;
      CHECK(drv->queue_create(npu, 0, EngineKind::kFabric, 0, &q).ok());
      std::vector<moe::dev::WorkDescriptor> work;
      for (int i = 0; i < kPerNpu; ++i)
        work.push_back(atomic(AtomicOp::kFetchAdd, counter.at(8), npu + 1, 0, i % 7));
      // Several doorbells, to interleave with the other threads.
      for (int part = 0; part < 4; ++part) {
        CHECK(drv->queue_submit(q, work.data() + part * 50, 50).ok());
        CHECK(drv->doorbell_ring(q).ok());
        moe::dev::Completion out[50];
        size_t n = 0;
        CHECK(drv->completions_poll(q, out, 50, &n).ok());
        CHECK(n == 50);
        results[npu].insert(results[npu].end(), out, out + n);
      }
    });
  }
  for (auto& t : threads) t.join();
  uint64_t expected = 0;
  for (uint32_t npu = 0; npu < 8; ++npu) expected += kPerNpu * (npu + 1);
  CHECK(*reinterpret_cast<uint64_t*>(counter.host + 8) == expected);
  std::set<uint64_t> olds;
  for (uint32_t npu = 0; npu < 8; ++npu)
    for (const auto& c : results[npu]) {
      CHECK(c.status == StatusCode::kOk);
      olds.insert(c.atomic_old);
    }
  CHECK(olds.size() == 8 * kPerNpu);
  CHECK(*olds.begin() == 0);
}

TEST_CASE("sim.atomics: compare_swap, load and store; the round trip costs latency both ways") {
  auto drv = make_driver("n16");
  const auto& t = drv->topology();
  Buffer word = make_buffer(*drv, 12, 4096);  // another node than NPU 1
  auto q = make_queue(*drv, 1, EngineKind::kFabric);
  auto c = run_one(*drv, q, atomic(AtomicOp::kCompareSwap, word.at(16), 5, 0));
  CHECK(c.status == StatusCode::kOk);
  CHECK(c.atomic_old == 0);
  CHECK(c.packets == 1);
  CHECK(c.planes_used == 1u);
  auto fail = run_one(*drv, q, atomic(AtomicOp::kCompareSwap, word.at(16), 9, 4));
  CHECK(fail.atomic_old == 5);  // compare failed: unchanged
  auto load = run_one(*drv, q, atomic(AtomicOp::kLoad, word.at(16), 0));
  CHECK(load.atomic_old == 5);
  auto store = run_one(*drv, q, atomic(AtomicOp::kStore, word.at(16), 77));
  CHECK(store.atomic_old == 5);
  CHECK(*reinterpret_cast<uint64_t*>(word.host + 16) == 77);

  // Four hops each way across nodes.
  const double one_way_latency = 4 * 200.0;
  const double wire = 16.0 + t.packet_header_bytes;
  const double expected = 2 * one_way_latency + 2 * wire / 56.0;
  CHECK(c.end.ns - c.start.ns == doctest::Approx(expected).epsilon(0.01));
}

TEST_CASE("sim.atomics: a store signal is ordered after the queue's earlier transfers to "
          "that NPU") {
  auto drv = make_driver("n8");
  Buffer src = make_buffer(*drv, 2, 1 << 22);
  Buffer dst = make_buffer(*drv, 3, (1 << 22) + 4096);
  fill_pattern(src.host, 1 << 22, 5);
  auto q = make_queue(*drv, 2, EngineKind::kFabric);
  auto done = run(*drv, q,
                  {transfer(src.at(), dst.at(), 1 << 22, 0x77),  // not on plane 3
                   atomic(AtomicOp::kStore, dst.at(1 << 22), 1, 0, 3),
                   atomic(AtomicOp::kFetchAdd, dst.at((1 << 22) + 8), 1, 0, 3)});
  CHECK(done[0].status == StatusCode::kOk);
  CHECK(done[1].status == StatusCode::kOk);
  CHECK(done[1].end.ns >= done[0].end.ns);
  // An unordered atomic on a plane the bulk transfer does not use does not wait for it.
  CHECK(done[2].end.ns < done[0].end.ns);
  CHECK(std::memcmp(src.host, dst.host, 1 << 22) == 0);
  CHECK(*reinterpret_cast<uint64_t*>(dst.host + (1 << 22)) == 1);
}
