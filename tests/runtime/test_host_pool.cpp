// The dispatch pool: workers bound as planned (real host), every task run exactly once, on
// its worker's thread, in order; refusals after shutdown and for bad targets.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "firmware-sim/presets.h"
#include "runtime/base/log.h"
#include "runtime/host/binding.h"
#include "runtime/host/dispatch_pool.h"
#include "runtime/host/host_topology.h"
#include "runtime/host/placement.h"

namespace {

using moe::StatusCode;
using moe::rt::host::CpuSet;
using moe::rt::host::current_thread_binding;
using moe::rt::host::DispatchPoolOptions;
using moe::rt::host::DispatchThreadPool;
using moe::rt::host::HostTopology;
using moe::rt::host::PlacementOptions;
using moe::rt::host::PlacementPlan;

HostTopology load(moe::StatusOr<HostTopology> t) {
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(t).value();
}

PlacementPlan plan_for(const char* preset, const HostTopology& host, uint32_t npus_per_thread) {
  auto sn = moe::sim::make_preset(preset);
  REQUIRE(sn.ok());
  PlacementOptions opts;
  opts.npus_per_thread = npus_per_thread;
  auto p = moe::rt::host::plan_placement(sn.value(), host, opts);
  REQUIRE_MESSAGE(p.ok(), p.status().to_string());
  return std::move(p).value();
}

std::unique_ptr<DispatchThreadPool> start(const HostTopology& host, const PlacementPlan& plan,
                                          DispatchPoolOptions opts = {}) {
  auto pool = DispatchThreadPool::start(host, plan, opts);
  REQUIRE_MESSAGE(pool.ok(), pool.status().to_string());
  return std::move(pool).value();
}

}  // namespace

TEST_CASE("rt.host.pool: on the real host, tasks run on workers bound as planned") {
  HostTopology host = load(HostTopology::discover());
  PlacementPlan plan = plan_for("n8", host, 2);  // 4 workers of 2 NPUs
  REQUIRE(plan.threads.size() == 4);
  DispatchPoolOptions opts;
  opts.require_binding = true;
  auto pool = start(host, plan, opts);
  REQUIRE(pool->num_workers() == 4);
  for (const auto& w : pool->workers()) {
    CHECK_MESSAGE(w.bound, w.binding.to_string());
    CHECK(w.planned_cpus == plan.threads[w.index].cpus);
  }

  struct Seen {
    std::mutex mu;
    std::vector<CpuSet> bindings;
    std::set<std::thread::id> threads;
  };
  std::vector<Seen> seen(pool->num_workers());
  for (uint32_t w = 0; w < pool->num_workers(); ++w) {
    for (int k = 0; k < 3; ++k) {
      REQUIRE(pool->submit(w, [&, w] {
                  auto b = current_thread_binding(host);
                  std::lock_guard<std::mutex> lock(seen[w].mu);
                  if (b.ok()) seen[w].bindings.push_back(b.value());
                  seen[w].threads.insert(std::this_thread::get_id());
                }).ok());
    }
  }
  REQUIRE(pool->shutdown().ok());
  std::set<std::thread::id> all_threads;
  for (uint32_t w = 0; w < pool->num_workers(); ++w) {
    CAPTURE(w);
    REQUIRE(seen[w].bindings.size() == 3);
    for (const CpuSet& b : seen[w].bindings) CHECK(b == plan.threads[w].cpus);
    CHECK(seen[w].threads.size() == 1);  // one thread per worker
    all_threads.insert(*seen[w].threads.begin());
  }
  CHECK(all_threads.size() == pool->num_workers());
  CHECK(all_threads.count(std::this_thread::get_id()) == 0);
}

TEST_CASE("rt.host.pool: every submitted task runs exactly once, in order per worker") {
  HostTopology host = load(HostTopology::discover());
  PlacementPlan plan = plan_for("n16", host, 1);  // 16 workers
  auto pool = start(host, plan);
  constexpr int kTasks = 4000;
  std::vector<std::atomic<int>> runs(kTasks);
  std::vector<std::vector<int>> order(pool->num_workers());  // each touched by its worker only
  // Two submitting threads, interleaved over NPUs.
  std::atomic<int> refused{0};
  auto submit_range = [&](int first, int stride) {
    for (int i = first; i < kTasks; i += stride) {
      uint32_t npu = static_cast<uint32_t>(i) % 16;
      uint32_t w = pool->worker_of_npu(npu).value();
      moe::Status s = pool->submit_to_npu(npu, [&runs, &order, i, w] {
        runs[i].fetch_add(1);
        order[w].push_back(i);
      });
      if (!s.ok()) ++refused;
    }
  };
  std::thread other([&] { submit_range(1, 2); });
  submit_range(0, 2);
  other.join();
  REQUIRE(pool->shutdown().ok());
  CHECK(refused.load() == 0);
  for (int i = 0; i < kTasks; ++i) CHECK(runs[i].load() == 1);
  uint64_t total = 0;
  for (const auto& w : pool->workers()) {
    total += w.tasks_run;
    CHECK(w.tasks_failed == 0);
  }
  CHECK(total == kTasks);
  for (uint32_t w = 0; w < pool->num_workers(); ++w) {
    // One submitter's tasks stay in its order (the two submitters interleave freely).
    for (int parity = 0; parity < 2; ++parity) {
      std::vector<int> mine;
      for (int i : order[w])
        if (i % 2 == parity) mine.push_back(i);
      CHECK(std::is_sorted(mine.begin(), mine.end()));
    }
  }
  CHECK(pool->submit(0, [] {}).code() == StatusCode::kFailedPrecondition);
  CHECK(pool->shutdown().ok());  // idempotent
}

TEST_CASE("rt.host.pool: on a synthetic host workers run unbound, or start refuses if asked") {
  HostTopology host = load(HostTopology::from_synthetic("pack:2 numa:2 core:4 pu:1"));
  PlacementPlan plan = plan_for("n8", host, 1);
  auto pool = start(host, plan);
  std::atomic<int> ran{0};
  for (uint32_t npu = 0; npu < 8; ++npu) REQUIRE(pool->submit_to_npu(npu, [&] { ++ran; }).ok());
  REQUIRE(pool->shutdown().ok());
  CHECK(ran.load() == 8);
  for (const auto& w : pool->workers()) {
    CHECK_FALSE(w.bound);
    CHECK(w.binding.code() == StatusCode::kUnsupported);
    CHECK(w.tasks_run == 1);
  }

  DispatchPoolOptions strict;
  strict.require_binding = true;
  auto refused = DispatchThreadPool::start(host, plan, strict);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kUnsupported);
  CHECK(refused.status().message().find("dispatch worker 0 (NPUs 0)") != std::string::npos);

  DispatchPoolOptions unbound;
  unbound.bind = false;
  auto quiet = start(host, plan, unbound);
  for (const auto& w : quiet->workers()) CHECK_FALSE(w.bound);
}

TEST_CASE("rt.host.pool: bad targets, throwing tasks and shutdown from a task") {
  HostTopology host = load(HostTopology::from_synthetic("numa:1 core:2 pu:1"));
  // 4 NPUs per thread asked, but a group never crosses a supernode CPU (2 NPUs each): 4.
  PlacementPlan plan = plan_for("n8", host, 4);
  DispatchPoolOptions opts;
  opts.bind = false;
  auto pool = start(host, plan, opts);
  REQUIRE(pool->num_workers() == 4);
  CHECK(pool->submit(4, [] {}).code() == StatusCode::kOutOfRange);
  CHECK(pool->submit(0, nullptr).code() == StatusCode::kInvalidArgument);
  CHECK(pool->submit_to_npu(8, [] {}).code() == StatusCode::kOutOfRange);
  CHECK(pool->worker_of_npu(7).value() == 3);

  std::atomic<int> after{0};
  std::mutex log_mu;
  std::vector<std::string> logged;
  auto previous = moe::log::set_sink([&](moe::log::Level, const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu);
    logged.push_back(line);
  });
  REQUIRE(pool->submit(0, [] { throw std::runtime_error("task failure for the test"); }).ok());
  REQUIRE(pool->submit(0, [&] { ++after; }).ok());
  moe::Status from_task;
  DispatchThreadPool* raw = pool.get();
  REQUIRE(pool->submit(1, [&] { from_task = raw->shutdown(); }).ok());
  REQUIRE(pool->shutdown().ok());
  moe::log::set_sink(previous);
  CHECK(after.load() == 1);
  REQUIRE(logged.size() == 1);
  CHECK(logged[0].find("dispatch worker 0: task threw: task failure for the test") != std::string::npos);
  CHECK(from_task.code() == StatusCode::kFailedPrecondition);
  auto reports = pool->workers();
  CHECK(reports[0].tasks_run == 2);
  CHECK(reports[0].tasks_failed == 1);
  CHECK(reports[1].tasks_run == 1);

  PlacementPlan empty;
  CHECK(DispatchThreadPool::start(host, empty).status().code() == StatusCode::kInvalidArgument);
}
