// MoE dispatch and combine in timing mode and their modelled time: the timing path runs the
// same protocol (same layouts, same modelled latency as functional mode) without touching
// payload memory; modelled latency respects the fabric's rated bandwidth, grows with the
// data, follows a hot expert, and shrinks with more issuing contexts.
#include <doctest/doctest.h>

#include <algorithm>

#include "interconnect/ic_stats.h"
#include "runtime/device/driver.h"
#include "tests/interconnect/test_moe_dispatch_util.h"

using namespace moetest;

namespace {

struct TimedRun {
  ic::DispatchHandle handle;
  ic::PhaseStats combine;
};

TimedRun run(Machine& m, ic::MoeBuffer& b, const ic::ExpertMap& map, const Workload& w) {
  TimedRun r;
  auto h = ic::moe_dispatch(b, map, w.inputs(), w.topk);
  REQUIRE_MESSAGE(h.ok(), h.status().to_string());
  r.handle = std::move(h).value();
  if (b.mode() == ic::Mode::kFunctional) {
    combine_all(b, r.handle, run_experts(b, r.handle), &r.combine);
  } else {
    Status s = ic::moe_combine(b, r.handle, {}, {}, &r.combine);
    REQUIRE_MESSAGE(s.ok(), s.to_string());
  }
  return r;
}

ic::MoeBufferConfig real_shape(ic::Mode mode) {
  ic::MoeBufferConfig c;
  c.max_tokens_per_rank = 128;
  c.hidden = 7168;
  c.max_topk = 8;
  c.dispatch_format = ic::TokenFormat::kInt8;
  c.combine_format = ic::TokenFormat::kBf16;
  c.mode = mode;
  return c;
}

}  // namespace

TEST_CASE("ic.moe_dispatch.timing: timing mode runs the same protocol as functional mode") {
  ic::MoeBufferConfig c;
  c.max_tokens_per_rank = 24;
  c.hidden = 512;
  c.max_topk = 4;
  c.max_shared_experts = 1;
  c.dispatch_format = ic::TokenFormat::kInt8;
  c.combine_format = ic::TokenFormat::kBf16;
  c.issue_contexts = 4;
  ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
  REQUIRE(map.add_replica(7, 1).ok());
  REQUIRE(map.add_shared_expert({3, 11}).ok());
  const Workload w = make_workload(16, 24, 512, 4, 32, 31, false);
  Machine fm("n16"), tm("n16");
  auto fb = fm.buffer(c, 16);
  c.mode = ic::Mode::kTiming;
  auto tb = tm.buffer(c, 16);
  Workload shapes_only = w;
  for (auto& t : shapes_only.tokens) t.clear();  // timing mode needs no token data
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    const TimedRun f = run(fm, *fb, map, w);
    const TimedRun t = run(tm, *tb, map, shapes_only);
    for (uint32_t r = 0; r < 16; ++r) {
      CAPTURE(r);
      const ic::RankReceive &a = f.handle.recv[r], &b = t.handle.recv[r];
      CHECK(a.num_slots == b.num_slots);
      REQUIRE(a.runs.size() == b.runs.size());
      for (size_t i = 0; i < a.runs.size(); ++i)
        CHECK((a.runs[i].src_rank == b.runs[i].src_rank &&
               a.runs[i].first_slot == b.runs[i].first_slot &&
               a.runs[i].num_slots == b.runs[i].num_slots &&
               a.runs[i].home_row == b.runs[i].home_row));
      CHECK(a.expert_offsets == b.expert_offsets);
      REQUIRE(a.rows.size() == b.rows.size());
      for (size_t i = 0; i < a.rows.size(); ++i) {
        const ic::SlotInfo &sa = a.slots[a.rows[i].slot], &sb = b.slots[b.rows[i].slot];
        CHECK((sa.src_rank == sb.src_rank && sa.src_token == sb.src_token &&
               a.rows[i].topk_slot == b.rows[i].topk_slot && a.rows[i].weight == b.rows[i].weight));
      }
    }
    // The fabric model sees the same operations: the same modelled times.
    CHECK(t.handle.stats.latency_ns == doctest::Approx(f.handle.stats.latency_ns).epsilon(1e-12));
    CHECK(t.combine.latency_ns == doctest::Approx(f.combine.latency_ns).epsilon(1e-12));
    CHECK(t.handle.stats.bytes_sent == f.handle.stats.bytes_sent);
    CHECK(t.combine.bytes_received == f.combine.bytes_received);
  }
  // A timing buffer holds no token data to read.
  std::vector<float> x(512);
  const TimedRun again = run(tm, *tb, map, shapes_only);
  CHECK(ic::read_received_token(*tb, again.handle, 0, 0, x).code() ==
        StatusCode::kFailedPrecondition);
}

TEST_CASE(
    "ic.moe_dispatch.timing: EP 64 at real shapes: bandwidth bound, no payload touched, "
    "every wait recorded") {
  Machine m("n64");
  const int64_t table_full_before = ic::stats_counters::kSignalTableFull.total();
  auto b = m.buffer(real_shape(ic::Mode::kTiming), 64);
  const ic::ExpertMap map = ic::ExpertMap::uniform(256, 64);
  Workload w = make_workload(64, 128, 1, 8, 256, 5, false, Routing::kUniform, 0, false);
  w.hidden = 7168;
  for (auto& t : w.tokens) t.clear();
  const TimedRun r = run(m, *b, map, w);
  const ic::PhaseStats& d = r.handle.stats;
  const double rated_gbps = m.driver->topology().npu_fabric_bandwidth_gbps(0);
  uint64_t max_fabric = 0, sent = 0, received = 0, slots = 0;
  for (uint32_t k = 0; k < 64; ++k) {
    max_fabric = std::max({max_fabric, d.fabric_bytes_sent[k], d.fabric_bytes_received[k]});
    sent += d.bytes_sent[k];
    received += d.bytes_received[k];
    slots += r.handle.recv[k].num_slots;
  }
  CHECK(sent == received);
  CHECK(sent == slots * b->layout().slot_bytes);
  // No faster than the rated bandwidth of the busiest NPU link, and not absurdly slower.
  const double bound_ns = max_fabric / rated_gbps;
  CHECK(d.latency_ns > bound_ns);
  CHECK(d.latency_ns < 4 * bound_ns + 20'000);
  CHECK(r.combine.latency_ns > 0);
  // Timing mode committed no payload memory: host residency is a few control pages.
  dev::NpuState st;
  REQUIRE(m.driver->npu_state(7, &st).ok());
  CHECK(st.hbm_resident_bytes < b->layout().rank_bytes / 16);
  // 2R^2 + R signal words fit the transport's table: every wait advanced the right clock.
  CHECK(ic::stats_counters::kSignalTableFull.total() == table_full_before);
}

TEST_CASE(
    "ic.moe_dispatch.timing: latency follows the data, the hot rank and the issuing "
    "contexts") {
  const ic::ExpertMap map = ic::ExpertMap::uniform(64, 16);
  auto latency = [&](uint32_t hidden, uint32_t contexts, Routing routing, TimedRun* out = nullptr) {
    Machine m("n16");  // a fresh machine: no traffic of an earlier run in its engines
    ic::MoeBufferConfig c = real_shape(ic::Mode::kTiming);
    c.hidden = hidden;
    c.issue_contexts = contexts;
    auto b = m.buffer(c, 16);
    Workload w = make_workload(16, 128, 1, 8, 64, 9, false, routing, 21, false);
    w.hidden = hidden;
    for (auto& t : w.tokens) t.clear();
    TimedRun r = run(m, *b, map, w);
    const double ns = r.handle.stats.latency_ns;
    if (out != nullptr) *out = std::move(r);
    return ns;
  };
  // More data per token, more time.
  const double small = latency(1024, 16, Routing::kUniform);
  const double large = latency(7168, 16, Routing::kUniform);
  CHECK(large > small);
  // Reservations overlap across contexts: one context pays a round trip per destination.
  CHECK(latency(7168, 1, Routing::kUniform) > large);
  // A hot expert (21, on rank 5) makes its rank the last to finish.
  TimedRun hot;
  latency(7168, 16, Routing::kHot, &hot);
  const auto& ends = hot.handle.stats.rank_end_ns;
  CHECK(std::max_element(ends.begin(), ends.end()) - ends.begin() == 5);
  CHECK(hot.handle.stats.latency_ns > large);
}
