// MoE dispatch and combine refuse bad input before sending anything (naming the rank,
// token and field), leave the buffer usable after a refusal, refuse stale or foreign
// handles, and fail promptly (no hang) with kNpuLost when an NPU of the group is lost.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "tests/interconnect/test_moe_dispatch_util.h"

using namespace moetest;

namespace {

ic::MoeBufferConfig config8() {
  ic::MoeBufferConfig c;
  c.max_tokens_per_rank = 16;
  c.hidden = 32;
  c.max_topk = 2;
  c.max_shared_experts = 1;
  c.dispatch_format = ic::TokenFormat::kInt8;
  c.combine_format = ic::TokenFormat::kBf16;
  c.issue_contexts = 2;
  return c;
}

bool mentions(const Status& s, const char* text) {
  return s.message().find(text) != std::string::npos;
}

}  // namespace

TEST_CASE("ic.moe_dispatch.errors: bad buffer configs are refused naming the field") {
  Machine m("n8");
  auto refused = [&](ic::MoeBufferConfig c, StatusCode code, const char* text) {
    auto b = ic::MoeBuffer::create(*m.transport, *m.memory, c);
    REQUIRE_FALSE(b.ok());
    CHECK(b.status().code() == code);
    CHECK_MESSAGE(mentions(b.status(), text), b.status().to_string());
  };
  ic::MoeBufferConfig c = config8();
  c.npus = {0, 1, 2, 3};
  REQUIRE(ic::MoeBuffer::create(*m.transport, *m.memory, c).ok());
  ic::MoeBufferConfig bad = c;
  bad.hidden = 0;
  refused(bad, StatusCode::kInvalidArgument, "hidden");
  bad = c;
  bad.dispatch_format = ic::TokenFormat::kFloat32;
  refused(bad, StatusCode::kInvalidArgument, "dispatch_format");
  bad = c;
  bad.combine_format = ic::TokenFormat::kInt8;
  refused(bad, StatusCode::kInvalidArgument, "combine_format");
  bad = c;
  bad.npus = {0, 1, 1};
  refused(bad, StatusCode::kInvalidArgument, "npu 1 listed twice");
  bad = c;
  bad.npus = {0, 8};
  refused(bad, StatusCode::kInvalidArgument, "npus[1] = 8");
  bad = c;
  bad.ranks_per_npu = 3;
  refused(bad, StatusCode::kInvalidArgument, "ranks_per_npu 3");
  bad = c;
  bad.npus.clear();
  refused(bad, StatusCode::kInvalidArgument, "npus is empty");
  bad = c;
  bad.max_tokens_per_rank = 1 << 20;  // far more than the test's 256 MiB symmetric window
  refused(bad, StatusCode::kOutOfMemory, "");
}

TEST_CASE("ic.moe_dispatch.errors: bad inputs are refused before anything is sent") {
  Machine m("n8");
  auto b = m.buffer(config8(), 4);
  ic::ExpertMap map = ic::ExpertMap::uniform(8, 4);
  REQUIRE(map.add_shared_expert({0, 1, 2, 3}).ok());
  const Workload good = make_workload(4, 16, 32, 2, 8, 1, true, Routing::kUniform, 0, false);
  const uint64_t puts_before =
      b->transport_stats().puts + b->transport_stats().atomics + b->transport_stats().signals;

  auto refused = [&](const Workload& w, uint32_t topk, const ic::ExpertMap& mp, StatusCode code,
                     const char* text) {
    auto h = ic::moe_dispatch(*b, mp, w.inputs(), topk);
    REQUIRE_FALSE(h.ok());
    CHECK(h.status().code() == code);
    CHECK_MESSAGE(mentions(h.status(), text), h.status().to_string());
  };
  SUBCASE("too many tokens on a rank") {
    Workload w = make_workload(4, 17, 32, 2, 8, 1, true, Routing::kUniform, 0, false);
    refused(w, 2, map, StatusCode::kInvalidArgument, "rank 0 has 17 tokens");
  }
  SUBCASE("an expert id out of range") {
    Workload w = good;
    w.ids[2][5] = 8;
    refused(w, 2, map, StatusCode::kInvalidArgument,
            "rank 2 token 2 top-k position 1: expert 8 out of range");
  }
  SUBCASE("a negative expert id other than -1") {
    Workload w = good;
    w.ids[1][0] = -7;
    refused(w, 2, map, StatusCode::kInvalidArgument, "expert -7 out of range");
  }
  SUBCASE("one expert twice in a token's top-k") {
    Workload w = good;
    w.ids[3][1] = w.ids[3][0];
    refused(w, 2, map, StatusCode::kInvalidArgument, "rank 3 token 0: expert");
  }
  SUBCASE("a weight that is not finite") {
    Workload w = good;
    w.weights[0][3] = std::numeric_limits<float>::quiet_NaN();
    refused(w, 2, map, StatusCode::kInvalidArgument, "weight nan is not finite");
  }
  SUBCASE("top-k over the buffer's max_topk, or zero") {
    Workload w = make_workload(4, 8, 32, 3, 8, 1, true);
    refused(w, 3, map, StatusCode::kInvalidArgument, "topk 3 out of range");
    refused(good, 0, map, StatusCode::kInvalidArgument, "topk 0 out of range");
  }
  SUBCASE("routing arrays of the wrong size") {
    Workload w = good;
    w.ids[1].pop_back();
    refused(w, 2, map, StatusCode::kInvalidArgument, "rank 1");
  }
  SUBCASE("token data of the wrong size") {
    Workload w = good;
    w.tokens[3].resize(w.tokens[3].size() - 1);
    refused(w, 2, map, StatusCode::kInvalidArgument, "BF16 values");
  }
  SUBCASE("one input per rank") {
    auto in = good.inputs();
    in.pop_back();
    auto h = ic::moe_dispatch(*b, map, in, 2);
    CHECK(h.status().code() == StatusCode::kInvalidArgument);
    CHECK(mentions(h.status(), "3 inputs for a buffer of 4 ranks"));
  }
  SUBCASE("a map for another group, an expert with no replica, too many shared experts") {
    refused(good, 2, ic::ExpertMap::uniform(8, 5), StatusCode::kInvalidArgument, "for 5 ranks");
    ic::ExpertMap holes(8, 4);
    REQUIRE(holes.add_replica(0, 0).ok());
    refused(good, 2, holes, StatusCode::kFailedPrecondition, "routed expert 1 has no replica");
    ic::ExpertMap two = map;
    REQUIRE(two.add_shared_expert({1}).ok());
    refused(good, 2, two, StatusCode::kInvalidArgument, "max_shared_experts");
    CHECK(map.add_shared_expert({}).code() == StatusCode::kInvalidArgument);
    CHECK(map.add_shared_expert({0, 0}).code() == StatusCode::kInvalidArgument);
    CHECK(map.add_replica(9, 0).code() == StatusCode::kInvalidArgument);
    CHECK(map.add_replica(0, 4).code() == StatusCode::kInvalidArgument);
  }
  // Nothing went out, and the buffer still works: the next dispatch is its first.
  const ic::EndpointStats s = b->transport_stats();
  CHECK(s.puts + s.atomics + s.signals == puts_before);
  REQUIRE(b->failure().ok());
  auto h = ic::moe_dispatch(*b, map, good.inputs(), 2);
  REQUIRE_MESSAGE(h.ok(), h.status().to_string());
  CHECK(h->epoch == 1);
  RankRule rule = [&](uint32_t s, uint32_t t, bool shared, uint32_t e) {
    return shared ? s : routed_rank_rule(map, s, t, e);
  };
  CHECK(check_routing(*b, *h, good, map, rule, true) == 0);
}

TEST_CASE("ic.moe_dispatch.errors: combine refuses foreign, stale and mis-sized arguments") {
  Machine m("n8");
  auto b = m.buffer(config8(), 4);
  auto other = m.buffer(config8(), 4);
  const ic::ExpertMap map = ic::ExpertMap::uniform(8, 4);
  const Workload w = make_workload(4, 16, 32, 2, 8, 2, true);
  auto h1 = ic::moe_dispatch(*b, map, w.inputs(), 2);
  REQUIRE(h1.ok());
  auto experts = run_experts(*b, *h1);
  std::vector<std::vector<float>> out(4);
  std::vector<std::span<const float>> in_spans;
  std::vector<std::span<float>> out_spans;
  for (uint32_t r = 0; r < 4; ++r) {
    out[r].resize(uint64_t{w.num_tokens[r]} * 32);
    in_spans.emplace_back(experts[r]);
    out_spans.emplace_back(out[r]);
  }
  Status s = ic::moe_combine(*other, *h1, in_spans, out_spans);
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK(mentions(s, "another buffer"));
  std::vector<std::span<const float>> short_in = in_spans;
  short_in[2] = short_in[2].first(short_in[2].size() - 1);
  s = ic::moe_combine(*b, *h1, short_in, out_spans);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(mentions(s, "rank 2: expert outputs"));
  std::vector<float> x(31);
  s = ic::read_received_token(*b, *h1, 0, 0, x);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  x.resize(32);
  s = ic::read_received_token(*b, *h1, 0, h1->recv[0].num_slots, x);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(ic::moe_combine(*b, *h1, in_spans, out_spans).ok());
  // A later dispatch reuses the receive buffers: the first handle is stale.
  auto h2 = ic::moe_dispatch(*b, map, w.inputs(), 2);
  REQUIRE(h2.ok());
  s = ic::moe_combine(*b, *h1, in_spans, out_spans);
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK(mentions(s, "from dispatch 1 but the buffer's latest is dispatch 2"));
  CHECK(ic::read_received_token(*b, *h1, 0, 0, x).code() == StatusCode::kFailedPrecondition);
  CHECK(b->failure().ok());
}

TEST_CASE("ic.moe_dispatch.errors: an NPU lost mid-run fails dispatch with kNpuLost, promptly") {
  Machine m("n8");
  ic::MoeBufferConfig c = config8();
  c.wait_timeout_wall_ns = 2'000'000'000;
  auto b = m.buffer(c, 8);
  const ic::ExpertMap map = ic::ExpertMap::uniform(8, 8);
  const Workload w = make_workload(8, 16, 32, 2, 8, 3, true, Routing::kUniform, 0, false);
  auto h = ic::moe_dispatch(*b, map, w.inputs(), 2);
  REQUIRE(h.ok());
  dev::FaultSpec f;
  f.kind = dev::FaultKind::kNpuLost;
  f.target = 5;
  dev::FaultId id = 0;
  REQUIRE(m.driver->fault_inject(f, &id).ok());
  auto lost = ic::moe_dispatch(*b, map, w.inputs(), 2);
  REQUIRE_FALSE(lost.ok());
  CHECK(lost.status().code() == StatusCode::kNpuLost);
  CHECK_MESSAGE(mentions(lost.status(), "npu 5"), lost.status().to_string());
  // The buffer is now unusable, and says why.
  CHECK(b->failure().code() == StatusCode::kNpuLost);
  auto again = ic::moe_dispatch(*b, map, w.inputs(), 2);
  CHECK(again.status().code() == StatusCode::kNpuLost);
  CHECK(mentions(again.status(), "failed earlier"));
}
