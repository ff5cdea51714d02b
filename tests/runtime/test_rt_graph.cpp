// Graphs: a replayed step gives the results (bodies, in order) and the modelled times of
// the same step executed eagerly; capture rules are enforced.
#include <doctest/doctest.h>

#include <memory>
#include <utility>
#include <vector>

#include "runtime/base/check.h"
#include "runtime/event.h"
#include "runtime/graph.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"

namespace moe::rt {
namespace {

constexpr uint32_t kStreams = 4;

struct Machine {
  std::unique_ptr<Runtime> rt;
  std::vector<std::unique_ptr<Stream>> streams;
  std::vector<Stream*> raw;
};

Machine open_machine() {
  RuntimeOptions o;
  o.supernode = "n8";
  o.open_transport = false;
  o.stream_depth = 32;
  auto rt = Runtime::open(o);
  REQUIRE_MESSAGE(rt.ok(), rt.status().to_string());
  Machine m;
  m.rt = std::move(rt).value();
  for (uint32_t i = 0; i < kStreams; ++i) {
    auto s = Stream::create(*m.rt, i * 2);
    REQUIRE(s.ok());
    m.raw.push_back(s->get());
    m.streams.push_back(std::move(s).value());
  }
  return m;
}

// One "step": a layer on every stream, a cross-NPU exchange ordered by events (stream 0
// feeds 1 and 2, stream 3 waits for both), more launches than a ring holds on stream 3.
// Bodies log (stream, op) so that order and count are checked exactly.
Status step(Machine& m, std::vector<std::pair<int, int>>* log) {
  auto launch = [&](int s, int op, double flops) {
    Kernel k;
    k.name = "op";
    k.flops = flops;
    k.hbm_bytes = 4096.0 * (op + 1);
    k.kernel_class = op % 2 ? dev::KernelClass::kMatmul : dev::KernelClass::kVector;
    k.body = [log, s, op] { log->emplace_back(s, op); };
    return m.raw[s]->launch(k);
  };
  Event e0, e1, e2;
  MOE_TRY(launch(0, 0, 4e12));
  MOE_TRY(e0.record(*m.raw[0]));
  MOE_TRY(m.raw[1]->wait(e0));
  MOE_TRY(m.raw[2]->wait(e0));
  MOE_TRY(launch(1, 1, 1e12));
  MOE_TRY(launch(2, 2, 3e12));
  MOE_TRY(e1.record(*m.raw[1]));
  MOE_TRY(e2.record(*m.raw[2]));
  MOE_TRY(m.raw[3]->wait(e1));
  MOE_TRY(m.raw[3]->wait(e2));
  for (int i = 0; i < 40; ++i) MOE_TRY(launch(3, 10 + i, 1e10 * (i % 3 + 1)));
  MOE_TRY(launch(0, 3, 1e11));
  return Status();
}

std::vector<ModelTime> times(const Machine& m) {
  std::vector<ModelTime> t;
  for (Stream* s : m.raw) t.push_back(s->modelled_time());
  return t;
}

TEST_CASE("rt.graph: replay gives the same bodies and modelled times as eager execution") {
  Machine eager = open_machine();
  std::vector<std::pair<int, int>> eager_log;
  std::vector<std::vector<ModelTime>> eager_times;
  for (int rep = 0; rep < 3; ++rep) {
    REQUIRE(step(eager, &eager_log).ok());
    eager_times.push_back(times(eager));
  }

  Machine replayed = open_machine();
  std::vector<std::pair<int, int>> replay_log;
  Graph graph;
  REQUIRE(graph.capture_begin(replayed.raw).ok());
  REQUIRE(step(replayed, &replay_log).ok());
  REQUIRE(graph.capture_end().ok());
  CHECK(replay_log.empty());  // capture executes nothing
  CHECK(graph.num_ops() == 44);
  for (Stream* s : replayed.raw) CHECK(s->launched() == 0);
  for (int rep = 0; rep < 3; ++rep) {
    REQUIRE(graph.replay().ok());
    const std::vector<ModelTime> t = times(replayed);
    for (uint32_t s = 0; s < kStreams; ++s) {
      CAPTURE(rep);
      CAPTURE(s);
      CHECK(t[s].ns == doctest::Approx(eager_times[rep][s].ns).epsilon(1e-12));
    }
  }
  CHECK(replay_log == eager_log);
  // The dependencies really shaped the times: stream 3 ends after the end of 1 and 2.
  CHECK(eager_times[0][3] > eager_times[0][2]);
  for (uint32_t s = 0; s < kStreams; ++s) {
    CHECK(replayed.raw[s]->synchronize().ok());
    CHECK(replayed.raw[s]->launched() == eager.raw[s]->launched());
  }
}

TEST_CASE("rt.graph: a step without events is one segment per stream") {
  Machine m = open_machine();
  Graph graph;
  REQUIRE(graph.capture_begin(m.raw).ok());
  int runs = 0;
  for (Stream* s : m.raw) {
    Kernel k;
    k.flops = 1e9;
    k.fn = [](void* ctx) { ++*static_cast<int*>(ctx); };
    k.ctx = &runs;
    REQUIRE(s->launch(k).ok());
    REQUIRE(s->launch(k).ok());
  }
  REQUIRE(graph.capture_end().ok());
  CHECK(graph.num_segments() == kStreams);
  for (int rep = 0; rep < 100; ++rep) REQUIRE(graph.replay().ok());  // rings wrap (depth 32)
  CHECK(runs == 100 * 2 * int(kStreams));
}

TEST_CASE("rt.graph: capture rules are enforced with failed-precondition errors") {
  Machine m = open_machine();
  Graph g;
  CHECK(g.replay().code() == StatusCode::kFailedPrecondition);
  CHECK(g.capture_end().code() == StatusCode::kFailedPrecondition);
  std::vector<Stream*> twice = {m.raw[0], m.raw[0]};
  CHECK(g.capture_begin(twice).code() == StatusCode::kFailedPrecondition);
  Event outside;
  REQUIRE(outside.record(*m.raw[1]).ok());
  std::vector<Stream*> first = {m.raw[0]};
  REQUIRE(g.capture_begin(first).ok());
  CHECK(m.raw[0]->capturing());
  Graph other;
  CHECK(other.capture_begin(first).code() == StatusCode::kFailedPrecondition);
  CHECK(m.raw[0]->wait(outside).code() == StatusCode::kFailedPrecondition);
  Event inside;
  REQUIRE(inside.record(*m.raw[0]).ok());
  CHECK(inside.captured());
  REQUIRE(g.capture_end().ok());
  CHECK(!m.raw[0]->capturing());
  CHECK(m.raw[1]->wait(inside).code() == StatusCode::kFailedPrecondition);
  CHECK(g.capture_begin(first).code() == StatusCode::kFailedPrecondition);
  CHECK(g.replay().ok());
}

}  // namespace
}  // namespace moe::rt
