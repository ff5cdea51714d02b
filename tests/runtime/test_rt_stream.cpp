// Runtime core: opening a supernode, stream order, event semantics across NPUs, modes.
#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "runtime/event.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"

namespace moe::rt {
namespace {

std::unique_ptr<Runtime> open_n8(ExecutionMode mode = ExecutionMode::kFunctional) {
  RuntimeOptions o;
  o.supernode = "n8";
  o.mode = mode;
  o.open_transport = false;
  o.stream_depth = 64;
  auto rt = Runtime::open(o);
  REQUIRE_MESSAGE(rt.ok(), rt.status().to_string());
  return std::move(rt).value();
}

std::unique_ptr<Stream> make_stream(Runtime& rt, dev::NpuId npu, uint32_t die = 0) {
  auto s = Stream::create(rt, npu, die);
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  return std::move(s).value();
}

Kernel matmul(double flops) {
  Kernel k;
  k.name = "matmul";
  k.flops = flops;
  k.hbm_bytes = 1 << 20;
  k.kernel_class = dev::KernelClass::kMatmul;
  return k;
}

TEST_CASE("rt.runtime: opens the default cm384 supernode and describes its devices") {
  auto rt = Runtime::open();
  REQUIRE_MESSAGE(rt.ok(), rt.status().to_string());
  Runtime& r = **rt;
  CHECK(r.num_devices() == 384);
  CHECK(r.has_transport());
  auto last = r.device(383);
  REQUIRE(last.ok());
  CHECK(last->npu == 383);
  CHECK(last->hbm_bytes > 0);
  CHECK(last->dies >= 1);
  CHECK(last->fabric_gbps > 0);
  auto bad = r.device(384);
  CHECK(bad.status().code() == StatusCode::kOutOfRange);
}

TEST_CASE("rt.runtime: bad options are refused with the field named") {
  RuntimeOptions o;
  o.supernode = "no-such-machine";
  CHECK(Runtime::open(o).status().code() == StatusCode::kNotFound);
  o.supernode = "n8";
  o.stream_depth = 1;
  auto r = Runtime::open(o);
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().to_string().find("stream_depth") != std::string::npos);
  auto rt = open_n8();
  CHECK(Stream::create(*rt, 8).status().code() == StatusCode::kOutOfRange);
  CHECK(Stream::create(*rt, 0, rt->topology().dies_per_npu).status().code() ==
        StatusCode::kOutOfRange);
  auto s = make_stream(*rt, 0);
  Kernel neg = matmul(-1);
  CHECK(s->launch(neg).code() == StatusCode::kInvalidArgument);
  Kernel both = matmul(1);
  both.body = [] {};
  both.fn = [](void*) {};
  CHECK(s->launch(both).code() == StatusCode::kInvalidArgument);
  Event never;
  CHECK(s->wait(never).code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("rt.stream: bodies run in launch order and modelled times are monotone") {
  auto rt = open_n8();
  auto s = make_stream(*rt, 3);
  std::vector<int> order;
  std::vector<ModelTime> times;
  // More launches than the ring holds (64): the stream polls to make room.
  for (int i = 0; i < 200; ++i) {
    Kernel k = matmul(1e9 * (1 + i % 7));
    k.body = [&order, i] { order.push_back(i); };
    REQUIRE(s->launch(k).ok());
    times.push_back(s->modelled_time());
  }
  REQUIRE(s->synchronize().ok());
  REQUIRE(order.size() == 200);
  for (int i = 0; i < 200; ++i) CHECK(order[i] == i);
  CHECK(times[0].ns > 0);
  for (size_t i = 1; i < times.size(); ++i) CHECK(times[i] > times[i - 1]);
  CHECK(s->launched() == 200);
}

TEST_CASE("rt.stream: raw fn + ctx bodies run; timing mode runs no body but keeps the times") {
  int hits = 0;
  ModelTime functional_end{}, timing_end{};
  for (ExecutionMode mode : {ExecutionMode::kFunctional, ExecutionMode::kTiming}) {
    auto rt = open_n8(mode);
    auto s = make_stream(*rt, 1);
    for (int i = 0; i < 10; ++i) {
      Kernel k = matmul(5e9);
      k.fn = [](void* ctx) { ++*static_cast<int*>(ctx); };
      k.ctx = &hits;
      REQUIRE(s->launch(k).ok());
    }
    REQUIRE(s->synchronize().ok());
    (mode == ExecutionMode::kFunctional ? functional_end : timing_end) = s->modelled_time();
  }
  CHECK(hits == 10);
  CHECK(functional_end.ns > 0);
  CHECK(functional_end == timing_end);
}

TEST_CASE("rt.event: a wait on another NPU's event delays later work; an earlier one does not") {
  auto rt = open_n8();
  auto a = make_stream(*rt, 0);
  auto b = make_stream(*rt, 5);
  auto c = make_stream(*rt, 6);
  Event before;
  REQUIRE(before.record(*a).ok());  // recorded before a's work
  REQUIRE(a->launch(matmul(1e13)).ok());
  Event after;
  REQUIRE(after.record(*a).ok());
  CHECK(after.time() == a->modelled_time());
  CHECK(after.time() > before.time());

  REQUIRE(b->wait(after).ok());
  CHECK(b->not_before() == after.time());
  REQUIRE(b->launch(matmul(1e9)).ok());
  REQUIRE(c->wait(before).ok());
  REQUIRE(c->launch(matmul(1e9)).ok());
  // The same small kernel: on c it ends long before a's big one, on b only after it.
  const ModelTime small = c->modelled_time() - before.time();
  CHECK(small.ns > 0);
  CHECK(c->modelled_time() < after.time());
  CHECK(b->modelled_time() >= after.time() + small * 0.999);
  // The floor is sticky: later launches on b stay after the event too.
  REQUIRE(b->launch(matmul(1e9)).ok());
  CHECK(b->modelled_time() > after.time() + small * 1.5);
  CHECK(a->synchronize().ok());
  CHECK(b->synchronize().ok());
  CHECK(c->synchronize().ok());
}

}  // namespace
}  // namespace moe::rt
