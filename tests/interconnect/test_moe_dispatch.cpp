// MoE dispatch and combine, functional mode: every (source, token, expert) arrives exactly
// once at the right rank and expert (data that encodes its origin names any misrouted, lost
// or duplicated token), and dispatch + expert function + combine equals a dense reference
// computed in double, for uniform, skewed (hot expert), ragged and repeated routings, with
// redundant replicas, shared experts and die ranks.
#include <doctest/doctest.h>

#include <algorithm>

#include "tests/interconnect/test_moe_dispatch_util.h"

using namespace moetest;

namespace {

ic::MoeBufferConfig small_config(uint32_t tokens, uint32_t hidden, uint32_t topk,
                                 ic::TokenFormat dispatch, ic::TokenFormat combine,
                                 uint32_t shared = 0) {
  ic::MoeBufferConfig c;
  c.max_tokens_per_rank = tokens;
  c.hidden = hidden;
  c.max_topk = topk;
  c.max_shared_experts = shared;
  c.dispatch_format = dispatch;
  c.combine_format = combine;
  c.issue_contexts = 4;
  return c;
}

RankRule routed_rule(const ic::ExpertMap& map) {
  return [&map](uint32_t s, uint32_t t, bool shared, uint32_t e) {
    REQUIRE(!shared);
    return routed_rank_rule(map, s, t, e);
  };
}

}  // namespace

TEST_CASE(
    "ic.moe_dispatch: uniform routing on n8: every (source, token, expert) arrives once, "
    "intact, at its expert") {
  Machine m("n8");
  for (ic::TokenFormat fmt : {ic::TokenFormat::kBf16, ic::TokenFormat::kInt8}) {
    CAPTURE(ic::token_format_name(fmt));
    auto b = m.buffer(small_config(48, 96, 4, fmt, ic::TokenFormat::kFloat32), 8);
    const ic::ExpertMap map = ic::ExpertMap::uniform(32, 8);
    const Workload w = make_workload(8, 48, 96, 4, 32, 11, /*encoded=*/true);
    auto h = ic::moe_dispatch(*b, map, w.inputs(), 4);
    REQUIRE_MESSAGE(h.ok(), h.status().to_string());
    CHECK(check_routing(*b, *h, w, map, routed_rule(map), true) == 0);
    // Shapes are dynamic: the counts per rank are whatever the routing made, and every
    // rank's expert layout covers exactly its rows.
    uint64_t rows = 0, expected_rows = 0;
    for (uint32_t r = 0; r < 8; ++r) {
      rows += h->recv[r].num_rows();
      CHECK(h->recv[r].expert_offsets.size() == h->recv[r].experts.size() + 1);
      CHECK(h->recv[r].expert_offsets.back() == h->recv[r].num_rows());
      CHECK(h->recv[r].experts.size() == 4);  // 32 experts over 8 ranks
      expected_rows += uint64_t{w.num_tokens[r]} * 4;
    }
    CHECK(rows == expected_rows);
    // One slot per (token, destination): a token reaching two experts of a rank crossed once.
    uint64_t slots = 0, pairs = 0;
    for (uint32_t r = 0; r < 8; ++r) {
      slots += h->recv[r].num_slots;
      for (uint32_t t = 0; t < w.num_tokens[r]; ++t)
        pairs += h->send[r].token_offsets[t + 1] - h->send[r].token_offsets[t];
    }
    CHECK(slots == pairs);
    CHECK(slots < rows);  // 4 of 32 experts on 8 ranks: some tokens share a rank
    const auto out = combine_all(*b, *h, run_experts(*b, *h));
    CHECK(check_against_reference(w, map, out, fmt == ic::TokenFormat::kInt8, false) == 0);
    CHECK(b->transport_stats().errors == 0);
  }
}

TEST_CASE(
    "ic.moe_dispatch: dispatch + combine equal the dense reference on n16 (BF16 and INT8 "
    "dispatch, BF16 and FP32 combine)") {
  Machine m("n16");
  const ic::ExpertMap map = ic::ExpertMap::uniform(64, 16);
  const Workload w = make_workload(16, 40, 128, 6, 64, 23, /*encoded=*/false);
  struct Case {
    ic::TokenFormat dispatch, combine;
  };
  for (Case c : {Case{ic::TokenFormat::kBf16, ic::TokenFormat::kFloat32},
                 Case{ic::TokenFormat::kBf16, ic::TokenFormat::kBf16},
                 Case{ic::TokenFormat::kInt8, ic::TokenFormat::kBf16},
                 Case{ic::TokenFormat::kInt8, ic::TokenFormat::kFloat32}}) {
    CAPTURE(ic::token_format_name(c.dispatch));
    CAPTURE(ic::token_format_name(c.combine));
    auto b = m.buffer(small_config(40, 128, 6, c.dispatch, c.combine), 16);
    auto h = ic::moe_dispatch(*b, map, w.inputs(), 6);
    REQUIRE_MESSAGE(h.ok(), h.status().to_string());
    CHECK(check_routing(*b, *h, w, map, routed_rule(map), false) == 0);
    double worst = 0;
    const auto out = combine_all(*b, *h, run_experts(*b, *h));
    CHECK(check_against_reference(w, map, out, c.dispatch == ic::TokenFormat::kInt8,
                                  c.combine == ic::TokenFormat::kBf16, &worst) == 0);
    if (c.dispatch == ic::TokenFormat::kBf16 && c.combine == ic::TokenFormat::kFloat32)
      CHECK(worst < 1e-5);  // only float rounding: BF16 tokens cross unchanged
    else
      CHECK(worst > 0);  // the format really rounds (the tolerance is not vacuous)
    if (c.combine == ic::TokenFormat::kBf16)
      for (float v : out[3]) CHECK(v == ic::round_to_bf16(v));
  }
}

TEST_CASE("ic.moe_dispatch: a hot expert (skewed routing) and ragged token counts") {
  Machine m("n16");
  auto b = m.buffer(small_config(64, 64, 4, ic::TokenFormat::kInt8, ic::TokenFormat::kBf16), 16);
  const ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
  // Every token's first choice is expert 5 (on rank 2): rank 2 receives every token.
  const Workload w = make_workload(16, 64, 64, 4, 32, 5, true, Routing::kHot, 5);
  auto h = ic::moe_dispatch(*b, map, w.inputs(), 4);
  REQUIRE_MESSAGE(h.ok(), h.status().to_string());
  CHECK(check_routing(*b, *h, w, map, routed_rule(map), true) == 0);
  uint32_t all_tokens = 0;
  for (uint32_t r = 0; r < 16; ++r) all_tokens += w.num_tokens[r];
  CHECK(h->recv[2].num_slots == all_tokens);
  const uint32_t local5 = 1;  // rank 2 holds experts 4 and 5
  CHECK(h->recv[2].experts[local5].expert == 5);
  CHECK(h->recv[2].expert_offsets[local5 + 1] - h->recv[2].expert_offsets[local5] == all_tokens);
  for (uint32_t s = 0; s < 16; ++s) {
    const ic::SourceRun* run = h->recv[2].run_from(s);
    CHECK((w.num_tokens[s] == 0 ? run == nullptr : run && run->num_slots == w.num_tokens[s]));
  }
  // The hot rank receives the most bytes: every token once, whatever else it draws.
  const auto& st = h->stats;
  CHECK(st.bytes_received[2] ==
        *std::max_element(st.bytes_received.begin(), st.bytes_received.end()));
  CHECK(st.bytes_received[2] == uint64_t{all_tokens} * b->layout().slot_bytes);
  const auto out = combine_all(*b, *h, run_experts(*b, *h));
  CHECK(check_against_reference(w, map, out, true, true) == 0);
}

TEST_CASE(
    "ic.moe_dispatch: redundant replicas: a token goes to exactly one replica, load is "
    "spread evenly") {
  Machine m("n16");
  auto b = m.buffer(small_config(64, 64, 3, ic::TokenFormat::kBf16, ic::TokenFormat::kFloat32), 16);
  ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
  // Expert 5 (rank 2) is hot: three more replicas on ranks 7, 9 and 14.
  for (uint32_t r : {7u, 9u, 14u}) REQUIRE(map.add_replica(5, r).ok());
  CHECK(map.add_replica(5, 9).code() == StatusCode::kInvalidArgument);  // one per rank
  const Workload w = make_workload(16, 64, 64, 3, 32, 9, true, Routing::kHot, 5, /*ragged=*/false);
  auto h = ic::moe_dispatch(*b, map, w.inputs(), 3);
  REQUIRE_MESSAGE(h.ok(), h.status().to_string());
  CHECK(check_routing(*b, *h, w, map, routed_rule(map), true) == 0);
  // Rows of expert 5 on each replica: 16 sources x 64 tokens / 4 replicas each, exactly
  // (each source's consecutive tokens go round-robin over the replicas).
  for (uint32_t r : {2u, 7u, 9u, 14u}) {
    CAPTURE(r);
    const int j = map.local_index(r, false, 5);
    REQUIRE(j >= 0);
    const auto& rr = h->recv[r];
    CHECK(rr.expert_offsets[j + 1] - rr.expert_offsets[j] == 16 * 64 / 4);
  }
  const auto out = combine_all(*b, *h, run_experts(*b, *h));
  CHECK(check_against_reference(w, map, out, false, false) == 0);
}

TEST_CASE(
    "ic.moe_dispatch: shared experts go to the nearest replica (own rank, own NPU, own "
    "node)") {
  Machine m("n16");  // 2 nodes of 8 NPUs
  SUBCASE("a replica on every rank: each token stays home") {
    auto b =
        m.buffer(small_config(32, 64, 2, ic::TokenFormat::kInt8, ic::TokenFormat::kBf16, 1), 16);
    ic::ExpertMap map = ic::ExpertMap::uniform(16, 16);
    std::vector<uint32_t> all(16);
    for (uint32_t r = 0; r < 16; ++r) all[r] = r;
    REQUIRE(map.add_shared_expert(all, 1.0f).ok());
    const Workload w = make_workload(16, 32, 64, 2, 16, 3, true);
    auto h = ic::moe_dispatch(*b, map, w.inputs(), 2);
    REQUIRE_MESSAGE(h.ok(), h.status().to_string());
    RankRule rule = [&](uint32_t s, uint32_t t, bool shared, uint32_t e) {
      return shared ? s : routed_rank_rule(map, s, t, e);
    };
    CHECK(check_routing(*b, *h, w, map, rule, true) == 0);
    const auto out = combine_all(*b, *h, run_experts(*b, *h));
    CHECK(check_against_reference(w, map, out, true, true) == 0);
  }
  SUBCASE("two replicas per node and a weighted second shared expert: the token's node") {
    auto b =
        m.buffer(small_config(32, 64, 2, ic::TokenFormat::kBf16, ic::TokenFormat::kFloat32, 2), 16);
    ic::ExpertMap map = ic::ExpertMap::uniform(16, 16);
    REQUIRE(map.add_shared_expert({1, 4, 9, 12}, 1.0f).ok());
    REQUIRE(map.add_shared_expert({15}, 0.5f).ok());
    const Workload w = make_workload(16, 32, 64, 2, 16, 4, true);
    auto h = ic::moe_dispatch(*b, map, w.inputs(), 2);
    REQUIRE_MESSAGE(h.ok(), h.status().to_string());
    RankRule rule = [&](uint32_t s, uint32_t t, bool shared, uint32_t e) -> uint32_t {
      if (!shared) return routed_rank_rule(map, s, t, e);
      if (e == 1) return 15;
      if (s == 1 || s == 4 || s == 9 || s == 12) return s;  // own rank first
      const uint32_t node_reps[2][2] = {{1, 4}, {9, 12}};
      return node_reps[s / 8][(s + t) % 2];
    };
    CHECK(check_routing(*b, *h, w, map, rule, true) == 0);
    const auto out = combine_all(*b, *h, run_experts(*b, *h));
    CHECK(check_against_reference(w, map, out, false, false) == 0);
  }
}

TEST_CASE("ic.moe_dispatch: die ranks (two per NPU): the shared expert of the other die") {
  Machine m("n8");
  ic::MoeBufferConfig c =
      small_config(24, 64, 2, ic::TokenFormat::kInt8, ic::TokenFormat::kBf16, 1);
  c.ranks_per_npu = 2;
  auto b = m.buffer(c, 4);  // 4 NPUs x 2 dies = 8 ranks
  REQUIRE(b->num_ranks() == 8);
  CHECK(b->npu_of(5) == 2);
  CHECK(b->die_of(5) == 1);
  CHECK(b->rank_base(5) - b->rank_base(4) == b->layout().rank_bytes);
  ic::ExpertMap map = ic::ExpertMap::uniform(16, 8);
  REQUIRE(map.add_shared_expert({0, 2, 4, 6}, 1.0f).ok());  // die 0 of every NPU
  const Workload w = make_workload(8, 24, 64, 2, 16, 8, true);
  auto h = ic::moe_dispatch(*b, map, w.inputs(), 2);
  REQUIRE_MESSAGE(h.ok(), h.status().to_string());
  RankRule rule = [&](uint32_t s, uint32_t t, bool shared, uint32_t e) {
    return shared ? s / 2 * 2 : routed_rank_rule(map, s, t, e);
  };
  CHECK(check_routing(*b, *h, w, map, rule, true) == 0);
  const auto out = combine_all(*b, *h, run_experts(*b, *h));
  CHECK(check_against_reference(w, map, out, true, true) == 0);
}

TEST_CASE(
    "ic.moe_dispatch: repeated dispatch/combine rounds reuse the buffers (n64, masked "
    "top-k entries)") {
  Machine m("n64");
  auto b = m.buffer(small_config(16, 32, 4, ic::TokenFormat::kInt8, ic::TokenFormat::kBf16), 64);
  const ic::ExpertMap map = ic::ExpertMap::uniform(128, 64);
  double previous_end = 0;
  for (uint64_t round = 0; round < 3; ++round) {
    CAPTURE(round);
    Workload w = make_workload(64, 16, 32, 4, 128, 100 + round, true);
    // Mask some top-k positions (-1: no expert).
    for (auto& ids : w.ids)
      for (size_t i = 3; i < ids.size(); i += 7) ids[i] = -1;
    auto h = ic::moe_dispatch(*b, map, w.inputs(), 4);
    REQUIRE_MESSAGE(h.ok(), h.status().to_string());
    CHECK(h->epoch == round + 1);
    CHECK(check_routing(*b, *h, w, map, routed_rule(map), true) == 0);
    CHECK(h->stats.start_ns >= previous_end);  // rounds follow each other in modelled time
    ic::PhaseStats cs;
    const auto out = combine_all(*b, *h, run_experts(*b, *h), &cs);
    CHECK(check_against_reference(w, map, out, true, true) == 0);
    CHECK(cs.start_ns >= h->stats.start_ns + h->stats.latency_ns);
    CHECK(cs.latency_ns > 0);
    previous_end = cs.start_ns + cs.latency_ns;
    // Combining the same handle again gives the same bits.
    const auto again = combine_all(*b, *h, run_experts(*b, *h));
    CHECK(again == out);
  }
}
