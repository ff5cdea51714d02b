// MoE dispatch completion modes: kBarrier (sources signal nothing; quiet + one group barrier,
// then each destination reads its slot counter) gives the same receive layouts and the same
// combined outputs, bit for bit, as kPerSourceFlags for random routings (sparse and dense,
// BF16 and INT8, skewed, die ranks, zero tokens anywhere), in functional and timing mode;
// its fabric signals grow with R, not R^2; its modelled latency covers at least one barrier
// through the transport; kAuto resolves from the static config.
#include <doctest/doctest.h>

#include <algorithm>
#include <tuple>

#include "tests/interconnect/test_moe_dispatch_util.h"

using namespace moetest;

namespace {

using Completion = ic::DispatchCompletion;

ic::MoeBufferConfig config(uint32_t tokens, uint32_t hidden, uint32_t topk, uint32_t shared,
                           ic::TokenFormat dispatch, Completion completion,
                           ic::Mode mode = ic::Mode::kFunctional) {
  ic::MoeBufferConfig c;
  c.max_tokens_per_rank = tokens;
  c.hidden = hidden;
  c.max_topk = topk;
  c.max_shared_experts = shared;
  c.dispatch_format = dispatch;
  c.combine_format = ic::TokenFormat::kBf16;
  c.issue_contexts = 4;
  c.completion = completion;
  c.mode = mode;
  return c;
}

// Keeps the tokens of `keep` ranks only (a decode-like step: most ranks have none).
Workload sparse(Workload w, const std::vector<uint32_t>& keep) {
  for (uint32_t r = 0; r < w.num_tokens.size(); ++r) {
    if (std::find(keep.begin(), keep.end(), r) != keep.end()) continue;
    w.num_tokens[r] = 0;
    w.tokens[r].clear();
    w.ids[r].clear();
    w.weights[r].clear();
  }
  return w;
}

// A rank's receive layout in a form independent of slot order (the modes reserve slots in
// different orders): per source its count, and per local expert its rows as
// (source, token, top-k position, weight), sorted.
struct Layout {
  std::vector<std::pair<uint32_t, uint32_t>> runs;  // (source, slots)
  std::vector<std::vector<std::tuple<uint32_t, uint32_t, uint32_t, float>>> rows;
  bool operator==(const Layout&) const = default;
};
Layout layout_of(const ic::RankReceive& rr) {
  Layout l;
  for (const ic::SourceRun& run : rr.runs) l.runs.push_back({run.src_rank, run.num_slots});
  std::sort(l.runs.begin(), l.runs.end());
  l.rows.resize(rr.experts.size());
  for (uint32_t j = 0; j < rr.experts.size(); ++j) {
    for (uint32_t i = rr.expert_offsets[j]; i < rr.expert_offsets[j + 1]; ++i) {
      const ic::SlotInfo& si = rr.slots[rr.rows[i].slot];
      l.rows[j].emplace_back(si.src_rank, si.src_token, rr.rows[i].topk_slot, rr.rows[i].weight);
    }
    std::sort(l.rows[j].begin(), l.rows[j].end());
  }
  return l;
}

struct Outcome {
  ic::DispatchHandle handle;
  std::vector<std::vector<float>> out;
  ic::PhaseStats combine;
  ic::EndpointStats transport;  // of the dispatch alone
};

Outcome run_once(ic::MoeBuffer& b, const ic::ExpertMap& map, const Workload& w) {
  Outcome o;
  const ic::EndpointStats before = b.transport_stats();
  auto h = ic::moe_dispatch(b, map, w.inputs(), w.topk);
  REQUIRE_MESSAGE(h.ok(), h.status().to_string());
  o.handle = std::move(h).value();
  o.transport = b.transport_stats();
  o.transport.signals -= before.signals;
  o.transport.atomics -= before.atomics;
  o.transport.puts -= before.puts;
  if (b.mode() == ic::Mode::kFunctional) {
    o.out = combine_all(b, o.handle, run_experts(b, o.handle), &o.combine);
  } else {
    Status s = ic::moe_combine(b, o.handle, {}, {}, &o.combine);
    REQUIRE_MESSAGE(s.ok(), s.to_string());
  }
  return o;
}

RankRule rule_with_shared_home(const ic::ExpertMap& map) {
  return [&map](uint32_t s, uint32_t t, bool shared, uint32_t e) {
    return shared ? s : routed_rank_rule(map, s, t, e);
  };
}

// The modelled latency of one barrier over `npus` NPUs through the transport, alone on a
// fresh machine.
double barrier_latency_ns(const char* preset, uint32_t npus) {
  Machine m(preset);
  std::vector<dev::NpuId> members;
  for (uint32_t i = 0; i < npus; ++i) members.push_back(i);
  auto g = m.transport->create_group(members);
  REQUIRE(g.ok());
  std::vector<std::unique_ptr<ic::Endpoint>> eps;
  for (uint32_t i = 0; i < npus; ++i) eps.push_back(m.endpoint(i));
  for (auto& ep : eps) REQUIRE(ep->barrier_arrive(**g).ok());
  double end = 0;
  for (auto& ep : eps) {
    REQUIRE(ep->barrier_wait(**g).ok());
    end = std::max(end, ep->now().ns);
  }
  return end;
}

}  // namespace

TEST_CASE("ic.moe_dispatch.completion: kAuto resolves from the static config alone") {
  // One source reaches at most T * D (token, rank) pairs: fewer than R ranks -> barrier.
  CHECK(ic::resolve_dispatch_completion(Completion::kAuto, 384, 16, 9) == Completion::kBarrier);
  CHECK(ic::resolve_dispatch_completion(Completion::kAuto, 256, 128, 8) ==
        Completion::kPerSourceFlags);
  CHECK(ic::resolve_dispatch_completion(Completion::kAuto, 64, 16, 4) ==
        Completion::kPerSourceFlags);  // 64 pairs for 64 ranks: flags
  CHECK(ic::resolve_dispatch_completion(Completion::kAuto, 64, 15, 4) == Completion::kBarrier);
  CHECK(ic::resolve_dispatch_completion(Completion::kBarrier, 8, 128, 8) == Completion::kBarrier);
  CHECK(ic::resolve_dispatch_completion(Completion::kPerSourceFlags, 384, 1, 9) ==
        Completion::kPerSourceFlags);
  CHECK(std::string(ic::dispatch_completion_name(Completion::kBarrier)) == "barrier");

  Machine m("n16");
  auto flags = m.buffer(config(64, 32, 4, 0, ic::TokenFormat::kBf16, Completion::kAuto), 16);
  CHECK(flags->completion() == Completion::kPerSourceFlags);
  CHECK(flags->barrier_group() == nullptr);
  auto barrier = m.buffer(config(2, 32, 4, 0, ic::TokenFormat::kBf16, Completion::kAuto), 16);
  CHECK(barrier->layout().completion == Completion::kBarrier);
  CHECK(barrier->completion() == Completion::kBarrier);
  REQUIRE(barrier->barrier_group() != nullptr);
  CHECK(barrier->barrier_group()->members().size() == 16);
  ic::MoeBufferConfig bad = config(2, 32, 4, 0, ic::TokenFormat::kBf16, Completion::kAuto);
  bad.npus = {0};
  bad.completion = static_cast<Completion>(7);
  CHECK(ic::compute_moe_buffer_layout(bad).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE(
    "ic.moe_dispatch.completion: barrier and flag modes give the same layouts and the same "
    "bits, sparse and dense, BF16 and INT8") {
  Machine m("n16");
  ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
  REQUIRE(map.add_replica(9, 12).ok());
  std::vector<uint32_t> all(16);
  for (uint32_t r = 0; r < 16; ++r) all[r] = r;
  REQUIRE(map.add_shared_expert(all, 1.0f).ok());
  for (ic::TokenFormat fmt : {ic::TokenFormat::kBf16, ic::TokenFormat::kInt8}) {
    CAPTURE(ic::token_format_name(fmt));
    auto fb = m.buffer(config(12, 64, 4, 1, fmt, Completion::kPerSourceFlags), 16);
    auto bb = m.buffer(config(12, 64, 4, 1, fmt, Completion::kBarrier), 16);
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      CAPTURE(seed);
      Workload w = make_workload(16, 12, 64, 4, 32, seed * 13 + 1, true);
      if (seed % 2 == 1) w = sparse(std::move(w), {static_cast<uint32_t>(seed), 11});
      const Outcome f = run_once(*fb, map, w);
      const Outcome b = run_once(*bb, map, w);
      CHECK(check_routing(*bb, b.handle, w, map, rule_with_shared_home(map), true) == 0);
      for (uint32_t r = 0; r < 16; ++r) {
        CAPTURE(r);
        CHECK(b.handle.recv[r].num_slots == f.handle.recv[r].num_slots);
        CHECK(layout_of(b.handle.recv[r]) == layout_of(f.handle.recv[r]));
        CHECK(b.handle.send[r].num_rows == f.handle.send[r].num_rows);
      }
      CHECK(b.out == f.out);  // combine sums in a fixed order: the same bits
      CHECK(check_against_reference(w, map, b.out, fmt == ic::TokenFormat::kInt8, true) == 0);
      CHECK(b.handle.stats.bytes_sent == f.handle.stats.bytes_sent);
      CHECK(b.combine.bytes_received == f.combine.bytes_received);
    }
  }
}

TEST_CASE(
    "ic.moe_dispatch.completion: sparse traffic on n64 costs O(R) signals, not R^2, and "
    "latency covers a barrier") {
  const ic::ExpertMap map = ic::ExpertMap::uniform(64, 64);
  Workload w = sparse(make_workload(64, 4, 32, 4, 64, 8, true), {3, 40});
  auto run_mode = [&](Completion c) {
    Machine m("n64");  // fresh engines: latencies comparable across modes
    auto b = m.buffer(config(4, 32, 4, 0, ic::TokenFormat::kBf16, c), 64);
    Outcome o = run_once(*b, map, w);
    CHECK(check_routing(*b, o.handle, w, map, rule_with_shared_home(map), true) == 0);
    CHECK(check_against_reference(w, map, o.out, false, true) == 0);
    return o;
  };
  const Outcome f = run_mode(Completion::kPerSourceFlags);
  const Outcome b = run_mode(Completion::kBarrier);
  CHECK(f.transport.signals >= 64 * 64);  // one flag per (source, destination)
  CHECK(b.transport.signals <= 4 * 64);   // barrier arrivals, releases, counter resets
  CHECK(b.transport.atomics == f.transport.atomics);  // the same reservations
  CHECK(b.transport.puts == f.transport.puts);
  const double one_barrier = barrier_latency_ns("n64", 64);
  CHECK(one_barrier > 0);
  CHECK(b.handle.stats.latency_ns >= one_barrier);
  CHECK(b.handle.stats.latency_ns < f.handle.stats.latency_ns + one_barrier);
  // Every rank ends at or after the barrier's release.
  for (double e : b.handle.stats.rank_end_ns) CHECK(e >= b.handle.stats.start_ns + one_barrier);
  CHECK(b.combine.latency_ns > 0);
}

TEST_CASE("ic.moe_dispatch.completion: zero tokens anywhere, then tokens again (counters reset)") {
  Machine m("n16");
  const ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
  auto b = m.buffer(config(8, 32, 2, 0, ic::TokenFormat::kInt8, Completion::kBarrier), 16);
  const Workload empty = sparse(make_workload(16, 8, 32, 2, 32, 3, true), {});
  const Outcome none = run_once(*b, map, empty);
  for (uint32_t r = 0; r < 16; ++r) {
    CHECK(none.handle.recv[r].num_slots == 0);
    CHECK(none.handle.recv[r].runs.empty());
    CHECK(none.handle.recv[r].experts.size() == 2);
    CHECK(none.handle.recv[r].expert_offsets == std::vector<uint32_t>{0, 0, 0});
    CHECK(none.handle.send[r].dests.empty());
    CHECK(none.out[r].empty());
  }
  CHECK(none.handle.stats.latency_ns >= barrier_latency_ns("n16", 16));
  CHECK(none.combine.latency_ns == 0);  // nobody has anything to combine
  for (uint64_t round = 0; round < 3; ++round) {
    CAPTURE(round);
    const Workload w = make_workload(16, 8, 32, 2, 32, 40 + round, true);
    const Outcome o = run_once(*b, map, round == 1 ? sparse(w, {0}) : w);
    const Workload& used = round == 1 ? sparse(w, {0}) : w;
    CHECK(o.handle.epoch == round + 2);
    CHECK(check_routing(*b, o.handle, used, map, rule_with_shared_home(map), true) == 0);
    CHECK(check_against_reference(used, map, o.out, true, true) == 0);
  }
  CHECK(b->failure().ok());
}

TEST_CASE("ic.moe_dispatch.completion: a hot expert and die ranks in barrier mode") {
  Machine m("n16");
  SUBCASE("every token's first choice on one rank") {
    auto b = m.buffer(config(16, 64, 4, 0, ic::TokenFormat::kInt8, Completion::kBarrier), 16);
    const ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
    const Workload w = make_workload(16, 16, 64, 4, 32, 5, true, Routing::kHot, 5);
    const Outcome o = run_once(*b, map, w);
    CHECK(check_routing(*b, o.handle, w, map, rule_with_shared_home(map), true) == 0);
    uint32_t all_tokens = 0, senders = 0;
    for (uint32_t r = 0; r < 16; ++r) {
      all_tokens += w.num_tokens[r];
      senders += w.num_tokens[r] > 0;
    }
    CHECK(o.handle.recv[2].num_slots == all_tokens);
    CHECK(o.handle.recv[2].runs.size() == senders);
    for (uint32_t s = 0; s < 16; ++s) {
      const ic::SourceRun* run = o.handle.recv[2].run_from(s);
      CHECK((w.num_tokens[s] == 0 ? run == nullptr : run && run->num_slots == w.num_tokens[s]));
    }
    CHECK(check_against_reference(w, map, o.out, true, true) == 0);
  }
  SUBCASE("two ranks per NPU meet on their NPU before the barrier") {
    ic::MoeBufferConfig c = config(6, 64, 2, 1, ic::TokenFormat::kBf16, Completion::kBarrier);
    c.ranks_per_npu = 2;
    auto b = m.buffer(c, 8);  // 16 ranks
    REQUIRE(b->barrier_group()->members().size() == 8);
    ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
    std::vector<uint32_t> die0;
    for (uint32_t r = 0; r < 16; r += 2) die0.push_back(r);
    REQUIRE(map.add_shared_expert(die0, 1.0f).ok());
    const Workload w = sparse(make_workload(16, 6, 64, 2, 32, 6, true), {1, 6, 13});
    const Outcome o = run_once(*b, map, w);
    RankRule rule = [&](uint32_t s, uint32_t t, bool shared, uint32_t e) {
      return shared ? s / 2 * 2 : routed_rank_rule(map, s, t, e);
    };
    CHECK(check_routing(*b, o.handle, w, map, rule, true) == 0);
    CHECK(check_against_reference(w, map, o.out, false, true) == 0);
    // Both dies of an NPU leave the barrier together.
    for (uint32_t r = 0; r < 16; r += 2)
      CHECK(o.handle.stats.rank_end_ns[r + 1] >= o.handle.stats.start_ns);
  }
}

TEST_CASE(
    "ic.moe_dispatch.completion: timing mode runs the barrier protocol like functional mode") {
  ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
  REQUIRE(map.add_shared_expert({3, 11}).ok());
  const Workload w = sparse(make_workload(16, 6, 128, 4, 32, 31, false), {2, 9, 15});
  Workload shapes_only = w;
  for (auto& t : shapes_only.tokens) t.clear();
  Machine fm("n16"), tm("n16");
  auto fb = fm.buffer(config(6, 128, 4, 1, ic::TokenFormat::kInt8, Completion::kBarrier), 16);
  auto tb = tm.buffer(
      config(6, 128, 4, 1, ic::TokenFormat::kInt8, Completion::kBarrier, ic::Mode::kTiming), 16);
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    const Outcome f = run_once(*fb, map, w);
    const Outcome t = run_once(*tb, map, shapes_only);
    for (uint32_t r = 0; r < 16; ++r) {
      CAPTURE(r);
      CHECK(layout_of(f.handle.recv[r]) == layout_of(t.handle.recv[r]));
    }
    CHECK(t.handle.stats.latency_ns == doctest::Approx(f.handle.stats.latency_ns).epsilon(1e-12));
    CHECK(t.combine.latency_ns == doctest::Approx(f.combine.latency_ns).epsilon(1e-12));
    CHECK(t.handle.stats.latency_ns > 0);
  }
}

TEST_CASE("ic.moe_dispatch.completion: an NPU lost fails a barrier-mode dispatch with kNpuLost") {
  Machine m("n8");
  ic::MoeBufferConfig c = config(2, 32, 2, 0, ic::TokenFormat::kInt8, Completion::kBarrier);
  c.wait_timeout_wall_ns = 2'000'000'000;
  auto b = m.buffer(c, 8);
  const ic::ExpertMap map = ic::ExpertMap::uniform(8, 8);
  const Workload w = sparse(make_workload(8, 2, 32, 2, 8, 3, true), {1, 6});
  REQUIRE(ic::moe_dispatch(*b, map, w.inputs(), 2).ok());
  dev::FaultSpec f;
  f.kind = dev::FaultKind::kNpuLost;
  f.target = 5;
  dev::FaultId id = 0;
  REQUIRE(m.driver->fault_inject(f, &id).ok());
  auto lost = ic::moe_dispatch(*b, map, w.inputs(), 2);
  REQUIRE_FALSE(lost.ok());
  CHECK_MESSAGE(lost.status().code() == StatusCode::kNpuLost,  // not a barrier timeout
                lost.status().to_string());
  CHECK(b->failure().code() == StatusCode::kNpuLost);
  CHECK(ic::moe_dispatch(*b, map, w.inputs(), 2).status().code() == StatusCode::kNpuLost);
}

TEST_CASE(
    "ic.moe_dispatch.completion: with source ranks only their NPUs meet, one release reaches "
    "every rank, and the result is the full barrier's") {
  const ic::ExpertMap map = ic::ExpertMap::uniform(64, 64);
  const std::vector<uint32_t> sources = {3, 17, 40, 41};
  Workload w = sparse(make_workload(64, 4, 32, 4, 64, 21, true), {3, 40, 41});
  auto run_mode = [&](bool with_sources) {
    Machine m("n64");
    ic::MoeBufferConfig c = config(4, 32, 4, 0, ic::TokenFormat::kBf16, Completion::kBarrier);
    if (with_sources) c.source_ranks = sources;
    auto b = m.buffer(c, 64);
    if (with_sources) {
      REQUIRE(b->barrier_group() != nullptr);
      CHECK(b->barrier_group()->members().size() == 4);  // NPUs 3, 17, 40, 41
      CHECK(b->is_source_rank(17));
      CHECK_FALSE(b->is_source_rank(5));
    }
    Outcome o = run_once(*b, map, w);
    CHECK(check_routing(*b, o.handle, w, map, rule_with_shared_home(map), true) == 0);
    CHECK(check_against_reference(w, map, o.out, false, true) == 0);
    // A second dispatch on the same buffer (a later epoch) works the same way.
    Outcome again = run_once(*b, map, w);
    CHECK(again.out == o.out);
    if (with_sources) {
      // A rank outside the list with tokens is refused before anything is sent.
      const Workload any = make_workload(64, 4, 32, 4, 64, 22, true);
      uint32_t outsider = 0;
      while (outsider < 64 && (any.num_tokens[outsider] == 0 || b->is_source_rank(outsider))) ++outsider;
      REQUIRE(outsider < 64);
      Workload bad = sparse(any, {outsider});
      auto h = ic::moe_dispatch(*b, map, bad.inputs(), bad.topk);
      CHECK(h.status().code() == StatusCode::kInvalidArgument);
      CHECK(h.status().message().find("source ranks") != std::string::npos);
    }
    return o;
  };
  const Outcome full = run_mode(false);
  const Outcome src = run_mode(true);
  CHECK(src.out == full.out);
  for (uint32_t r = 0; r < 64; ++r) CHECK(layout_of(src.handle.recv[r]) == layout_of(full.handle.recv[r]));
  // Signals: the source NPUs' barrier plus one release per rank, against an arrival and a
  // release per NPU for the full barrier.
  MESSAGE("signals: full barrier " << full.transport.signals << ", source barrier "
                                   << src.transport.signals << "; latency " << full.handle.stats.latency_ns
                                   << " vs " << src.handle.stats.latency_ns << " ns");
  CHECK(src.transport.signals < full.transport.signals);
  CHECK(src.handle.stats.latency_ns > 0);

  Machine m("n16");
  ic::MoeBufferConfig bad = config(2, 32, 4, 0, ic::TokenFormat::kBf16, Completion::kBarrier);
  bad.npus = {0, 1, 2};
  bad.source_ranks = {2, 1};
  CHECK(ic::compute_moe_buffer_layout(bad).status().code() == StatusCode::kInvalidArgument);
  bad.source_ranks = {3};
  CHECK(ic::compute_moe_buffer_layout(bad).status().code() == StatusCode::kInvalidArgument);
}
