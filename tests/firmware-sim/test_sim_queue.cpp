// Queue semantics: completions in submission order with their tags, the ring's capacity,
// descriptors refused by index and reason, waiting, markers, destroy.
#include <doctest/doctest.h>

#include <string>
#include <thread>

#include "tests/firmware-sim/sim_test_util.h"

using namespace simtest;
using moe::StatusCode;
using moe::dev::EngineKind;
using moe::dev::WorkDescriptor;
using moe::dev::WorkKind;

namespace {

WorkDescriptor kernel(double flops, double bytes, uint64_t tag, double not_before = 0) {
  WorkDescriptor w;
  w.kind = WorkKind::kKernel;
  w.tag = tag;
  w.not_before = moe::ModelTime{not_before};
  w.kernel.flops = flops;
  w.kernel.hbm_bytes = bytes;
  return w;
}

}  // namespace

TEST_CASE("sim.queue: completions come back in submission order with their tags") {
  auto drv = make_driver("n8");
  auto q = make_queue(*drv, 0, EngineKind::kCompute, 1);
  std::vector<WorkDescriptor> work;
  for (uint64_t i = 0; i < 20; ++i) work.push_back(kernel(1e9 * (20 - i), 1e6, 100 + i));
  REQUIRE(drv->queue_submit(q, work.data(), 10).ok());
  REQUIRE(drv->queue_submit(q, work.data() + 10, 10).ok());
  size_t n = 99;
  moe::dev::Completion out[32];
  REQUIRE(drv->completions_poll(q, out, 32, &n).ok());
  CHECK(n == 0);  // nothing runs before the doorbell
  REQUIRE(drv->doorbell_ring(q).ok());
  REQUIRE(drv->completions_poll(q, out, 7, &n).ok());
  CHECK(n == 7);
  size_t m = 0;
  REQUIRE(drv->completions_poll(q, out + 7, 32, &m).ok());
  CHECK(m == 13);
  double prev_end = 0;
  for (uint64_t i = 0; i < 20; ++i) {
    CHECK(out[i].tag == 100 + i);
    CHECK(out[i].status == StatusCode::kOk);
    CHECK(out[i].start.ns == doctest::Approx(prev_end));  // in order on one die
    CHECK(out[i].end.ns > out[i].start.ns);
    prev_end = out[i].end.ns;
  }
  moe::ModelTime t;
  REQUIRE(drv->engine_time(q, &t).ok());
  CHECK(t.ns == doctest::Approx(prev_end));

  // A marker completes when the queue's earlier work has.
  WorkDescriptor marker;
  marker.kind = WorkKind::kMarker;
  marker.tag = 7;
  auto c = run_one(*drv, q, marker);
  CHECK(c.tag == 7);
  CHECK(c.end.ns == doctest::Approx(prev_end));
}

TEST_CASE("sim.queue: a full ring refuses the submit and writes nothing") {
  auto drv = make_driver("n8");
  auto q = make_queue(*drv, 1, EngineKind::kCompute, 0, 8);
  std::vector<WorkDescriptor> work;
  for (uint64_t i = 0; i < 9; ++i) work.push_back(kernel(1e6, 0, i));
  moe::Status s = drv->queue_submit(q, work.data(), 9);
  CHECK(s.code() == StatusCode::kResourceExhausted);
  CHECK(s.message().find("9 descriptors") != std::string::npos);
  REQUIRE(drv->queue_submit(q, work.data(), 6).ok());
  CHECK(drv->queue_submit(q, work.data(), 3).code() == StatusCode::kResourceExhausted);
  REQUIRE(drv->queue_submit(q, work.data() + 6, 2).ok());
  REQUIRE(drv->doorbell_ring(q).ok());
  // Completed but not polled: still holding their slots.
  CHECK(drv->queue_submit(q, work.data(), 1).code() == StatusCode::kResourceExhausted);
  moe::dev::Completion out[8];
  size_t n = 0;
  REQUIRE(drv->completions_poll(q, out, 3, &n).ok());
  CHECK(n == 3);
  for (size_t i = 0; i < 3; ++i) CHECK(out[i].tag == i);
  REQUIRE(drv->queue_submit(q, work.data(), 3).ok());
  CHECK(drv->queue_submit(q, work.data(), 1).code() == StatusCode::kResourceExhausted);
  REQUIRE(drv->doorbell_ring(q).ok());
  REQUIRE(drv->completions_poll(q, out, 8, &n).ok());
  CHECK(n == 8);
  CHECK(out[4].tag == 7);
  CHECK(out[5].tag == 0);  // the second batch follows the first
  CHECK(drv->caps().queue_depth_max >= 8);
  moe::dev::QueueId big;
  CHECK(drv->queue_create(1, 0, EngineKind::kCompute, drv->caps().queue_depth_max + 1, &big)
            .code() == StatusCode::kInvalidArgument);
}

TEST_CASE("sim.queue: bad descriptors are refused, naming the first bad one") {
  auto drv = make_driver("n8");
  Buffer b = make_buffer(*drv, 0, 8192);
  moe::dev::HbmRange reserved_only;
  REQUIRE(drv->hbm_reserve(1, 8192, 4096, &reserved_only).ok());
  auto q = make_queue(*drv, 0, EngineKind::kFabric);

  std::vector<WorkDescriptor> work = {transfer(b.at(), b.at(4096), 4096),
                                      transfer(b.at(), b.at(4096), 4096),
                                      transfer(b.at(), {1, reserved_only.offset}, 4096)};
  moe::Status s = drv->queue_submit(q, work.data(), work.size());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("descriptor 2") != std::string::npos);
  CHECK(s.message().find("npu 1") != std::string::npos);
  CHECK(s.message().find("uncommitted") != std::string::npos);
  // Nothing was written: the doorbell has nothing to do.
  REQUIRE(drv->doorbell_ring(q).ok());
  size_t n = 0;
  moe::dev::Completion out[4];
  REQUIRE(drv->completions_poll(q, out, 4, &n).ok());
  CHECK(n == 0);

  // Timing mode needs no committed memory, only addresses inside the capacity.
  auto c = run_one(*drv, q, transfer({0, 0}, {1, 1ull << 30}, 4096, 0xffffffffu, false));
  CHECK(c.status == StatusCode::kOk);
  const uint64_t cap = drv->topology().hbm.capacity_bytes;
  s = drv->queue_submit(q, std::vector{transfer({0, cap - 10}, {1, 0}, 4096, ~0u, false)}.data(), 1);
  CHECK(s.code() == StatusCode::kInvalidArgument);

  s = drv->queue_submit(q, std::vector{transfer({0, 0}, {42, 0}, 64, ~0u, false)}.data(), 1);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("npu 42") != std::string::npos);
  s = drv->queue_submit(q, std::vector{transfer(b.at(), b.at(4096), 64, 1u << 9)}.data(), 1);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("plane_mask") != std::string::npos);
  s = drv->queue_submit(q, std::vector{atomic(moe::dev::AtomicOp::kFetchAdd, b.at(4), 1)}.data(), 1);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("misaligned") != std::string::npos);
  WorkDescriptor k = kernel(1, 1, 0);
  s = drv->queue_submit(q, &k, 1);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("kernel descriptor on a fabric queue") != std::string::npos);
  WorkDescriptor bad_time = transfer(b.at(), b.at(4096), 64);
  bad_time.not_before = moe::ModelTime{-1};
  CHECK(drv->queue_submit(q, &bad_time, 1).code() == StatusCode::kInvalidArgument);

  moe::dev::QueueId none{12345};
  CHECK(drv->queue_submit(none, &k, 1).code() == StatusCode::kNotFound);
  CHECK(drv->doorbell_ring(none).code() == StatusCode::kNotFound);
  moe::dev::QueueId qq;
  CHECK(drv->queue_create(0, 2, EngineKind::kCompute, 0, &qq).code() ==
        StatusCode::kInvalidArgument);  // dies 0 and 1 only
  CHECK(drv->queue_create(8, 0, EngineKind::kFabric, 0, &qq).code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("sim.queue: wait returns at once when a completion is pending, times out otherwise") {
  auto drv = make_driver("n8");
  auto q = make_queue(*drv, 2, EngineKind::kCompute);
  moe::Status s = drv->completions_wait(q, 1000000);  // 1 ms
  CHECK(s.code() == StatusCode::kTimeout);
  WorkDescriptor w = kernel(1e6, 0, 5);
  REQUIRE(drv->queue_submit(q, &w, 1).ok());
  // Another thread rings the doorbell; this one waits for it.
  std::thread ringer([&] { CHECK(drv->doorbell_ring(q).ok()); });
  CHECK(drv->completions_wait(q, 10'000'000'000).ok());
  ringer.join();
  CHECK(drv->completions_wait(q, 0).ok());
  moe::dev::Completion c;
  size_t n = 0;
  REQUIRE(drv->completions_poll(q, &c, 1, &n).ok());
  CHECK(n == 1);
  CHECK(c.tag == 5);

  REQUIRE(drv->queue_destroy(q).ok());
  CHECK(drv->completions_wait(q, 0).code() == StatusCode::kNotFound);
  CHECK(drv->queue_destroy(q).code() == StatusCode::kNotFound);
  moe::ModelTime t;
  CHECK(drv->engine_time(q, &t).code() == StatusCode::kNotFound);
}

TEST_CASE("sim.queue: queues of one engine share its clock; different dies run in parallel") {
  auto drv = make_driver("n8");
  auto a = make_queue(*drv, 3, EngineKind::kCompute, 0);
  auto b = make_queue(*drv, 3, EngineKind::kCompute, 0);
  auto other_die = make_queue(*drv, 3, EngineKind::kCompute, 1);
  auto c1 = run_one(*drv, a, kernel(1e12, 0, 1));
  auto c2 = run_one(*drv, b, kernel(1e12, 0, 2));
  auto c3 = run_one(*drv, other_die, kernel(1e12, 0, 3));
  CHECK(c2.start.ns == doctest::Approx(c1.end.ns));
  CHECK(c3.start.ns == 0);
  CHECK(c3.end.ns == doctest::Approx(c1.end.ns));
  // not_before holds work back.
  auto c4 = run_one(*drv, other_die, kernel(1e6, 0, 4, 1e9));
  CHECK(c4.start.ns == doctest::Approx(1e9));
}
