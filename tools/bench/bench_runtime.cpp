// Benchmarks of the runtime core's host cost (wall clock).
//
// rt.launch_eager_ns: wall ns per kernel launched eagerly on one stream (describe, submit,
// doorbell, the simulator's execution of the cost model and the body, amortized completion
// polling). Baseline: a plain std::function call per op. Target: under 1 us.
// rt.launch_replay_ns: wall ns per kernel when a captured graph of 8 streams x 64 kernels
// is replayed. Baseline: the eager launch of the same ops. Target: under 100 ns.
// rt.replay_step_384_us: wall us to replay a step that launches one kernel on each of the
// 384 NPUs of cm384. Baseline: the same step launched eagerly.
// Every benchmark checks that each body ran exactly once per launch.
#include <functional>
#include <memory>
#include <vector>

#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"
#include "runtime/event.h"
#include "runtime/graph.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"
#include "tools/lib/bench/harness.h"

namespace {

using namespace moe;

void count_one(void* ctx) { ++*static_cast<uint64_t*>(ctx); }

std::unique_ptr<rt::Runtime> open_runtime(const char* supernode) {
  rt::RuntimeOptions o;
  o.supernode = supernode;
  o.open_transport = false;
  auto r = rt::Runtime::open(o);
  return r.ok() ? std::move(r).value() : nullptr;
}

std::vector<std::unique_ptr<rt::Stream>> make_streams(rt::Runtime& r, uint32_t count) {
  std::vector<std::unique_ptr<rt::Stream>> streams;
  for (uint32_t i = 0; i < count; ++i) {
    auto s = rt::Stream::create(r, i % r.num_devices(), (i / r.num_devices()) % r.topology().dies_per_npu);
    if (!s.ok()) return {};
    streams.push_back(std::move(s).value());
  }
  return streams;
}

rt::Kernel counting_kernel(uint64_t* counter) {
  rt::Kernel k;
  k.name = "count";
  k.flops = 1e9;
  k.hbm_bytes = 1 << 20;
  k.fn = &count_one;
  k.ctx = counter;
  return k;
}

// Wall ns per op of `ops` eager launches spread round-robin over `streams`.
double eager_ns_per_op(std::vector<std::unique_ptr<rt::Stream>>& streams, uint64_t ops,
                       uint64_t* counter, bool* ok) {
  const rt::Kernel k = counting_kernel(counter);
  const uint64_t before = *counter;
  const int64_t t0 = wall_now_ns();
  for (uint64_t i = 0; i < ops; ++i)
    if (!streams[i % streams.size()]->launch(k).ok()) *ok = false;
  const int64_t t1 = wall_now_ns();
  for (auto& s : streams)
    if (!s->synchronize().ok()) *ok = false;
  if (*counter - before != ops) *ok = false;
  return double(t1 - t0) / double(ops);
}

MOE_BENCHMARK(rt_launch) {
  const uint64_t ops = ctx.quick ? 20000 : 400000;
  auto r = open_runtime("n8");
  bool ok = r != nullptr;
  std::vector<std::unique_ptr<rt::Stream>> one, eight;
  if (ok) {
    one = make_streams(*r, 1);
    eight = make_streams(*r, 8);
    ok = one.size() == 1 && eight.size() == 8;
  }
  uint64_t counter = 0;
  // Baseline: a plain std::function call per op.
  std::function<void()> fn = [&counter] { ++counter; };
  const int64_t b0 = wall_now_ns();
  for (uint64_t i = 0; i < ops; ++i) {
    fn();
    bench::do_not_optimize(counter);
  }
  const double call_ns = double(wall_now_ns() - b0) / double(ops);
  const bool call_ok = counter == ops;
  counter = 0;
  const double eager_ns = ok ? eager_ns_per_op(one, ops, &counter, &ok) : 0;
  ctx.record({"rt.launch_eager_ns", eager_ns, "ns", call_ns, call_ns > 0 ? eager_ns / call_ns : 0,
              "wall", ok && call_ok, "host ns per eager launch; baseline a std::function call; target < 1000"});

  // Replay: 8 streams x 64 kernels captured once.
  bool replay_ok = ok;
  double eager8_ns = 0, replay_ns = 0;
  if (ok) {
    counter = 0;
    eager8_ns = eager_ns_per_op(eight, ops, &counter, &replay_ok);
    rt::Graph graph;
    std::vector<rt::Stream*> raw;
    for (auto& s : eight) raw.push_back(s.get());
    replay_ok = replay_ok && graph.capture_begin(raw).ok();
    const rt::Kernel k = counting_kernel(&counter);
    for (uint32_t i = 0; i < 8 * 64; ++i)
      if (!raw[i % 8]->launch(k).ok()) replay_ok = false;
    replay_ok = replay_ok && graph.capture_end().ok() && graph.num_ops() == 512;
    const uint64_t reps = ops / 512;
    counter = 0;
    const int64_t t0 = wall_now_ns();
    for (uint64_t rep = 0; rep < reps && replay_ok; ++rep) replay_ok = graph.replay().ok();
    replay_ns = double(wall_now_ns() - t0) / double(reps * 512);
    for (auto* s : raw) replay_ok = s->synchronize().ok() && replay_ok;
    replay_ok = replay_ok && counter == reps * 512;
  }
  ctx.record({"rt.launch_replay_ns", replay_ns, "ns", eager8_ns,
              eager8_ns > 0 ? replay_ns / eager8_ns : 0, "wall", replay_ok,
              "host ns per op in graph replay (8 streams x 64 ops); baseline eager on the same streams; target < 100"});
}

MOE_BENCHMARK(rt_replay_step_384) {
  const uint64_t reps = ctx.quick ? 20 : 2000;
  auto r = open_runtime("cm384");
  bool ok = r != nullptr && r->num_devices() == 384;
  std::vector<std::unique_ptr<rt::Stream>> streams;
  if (ok) streams = make_streams(*r, 384);
  ok = ok && streams.size() == 384;
  uint64_t counter = 0;
  double eager_us = 0, replay_us = 0;
  if (ok) {
    eager_us = eager_ns_per_op(streams, 384 * reps, &counter, &ok) * 384 * 1e-3;
    rt::Graph graph;
    std::vector<rt::Stream*> raw;
    for (auto& s : streams) raw.push_back(s.get());
    ok = ok && graph.capture_begin(raw).ok();
    const rt::Kernel k = counting_kernel(&counter);
    for (auto* s : raw) ok = ok && s->launch(k).ok();
    ok = ok && graph.capture_end().ok() && graph.num_segments() == 384;
    counter = 0;
    const ModelTime start = raw[0]->modelled_time();
    const int64_t t0 = wall_now_ns();
    for (uint64_t rep = 0; rep < reps && ok; ++rep) ok = graph.replay().ok();
    replay_us = double(wall_now_ns() - t0) / double(reps) * 1e-3;
    for (auto* s : raw) ok = s->synchronize().ok() && ok;
    ok = ok && counter == reps * 384 && raw[383]->modelled_time() > start;
  }
  ctx.record({"rt.replay_step_384_us", replay_us, "us", eager_us,
              eager_us > 0 ? replay_us / eager_us : 0, "wall", ok,
              "graph replay of one op on each of 384 NPUs; baseline the eager step"});
}

}  // namespace
