// MoE dispatch and combine under faults injected mid-run (a plane going down, packets
// corrupted and dropped): results bit-identical to a fault-free run, every byte delivered
// exactly once (zero lost), the transport's counters showing the resends and failovers.
#include <doctest/doctest.h>

#include <map>
#include <tuple>

#include "tests/interconnect/test_moe_dispatch_util.h"

using namespace moetest;

namespace {

struct RunResult {
  // (destination rank, source rank, source token) -> the received slot's raw payload.
  std::map<std::tuple<uint32_t, uint32_t, uint32_t>, std::vector<uint8_t>> received;
  std::vector<std::vector<float>> combined;
  ic::EndpointStats stats;
  dev::FaultCounters faults;
  double dispatch_ns = 0, combine_ns = 0;
  int routing_problems = 0, reference_problems = 0;
};

RunResult run(const std::vector<dev::FaultSpec>& faults) {
  Machine m("n16", 7);
  ic::MoeBufferConfig c;
  c.max_tokens_per_rank = 32;
  c.hidden = 2048;  // 4 KiB tokens: runs of tens of packets, in flight for a while
  c.max_topk = 4;
  c.max_shared_experts = 1;
  c.dispatch_format = ic::TokenFormat::kBf16;
  c.combine_format = ic::TokenFormat::kBf16;
  c.issue_contexts = 4;
  auto b = m.buffer(c, 16);
  ic::ExpertMap map = ic::ExpertMap::uniform(32, 16);
  REQUIRE(map.add_replica(3, 12).ok());
  REQUIRE(map.add_shared_expert({0, 5, 10, 15}).ok());
  for (const dev::FaultSpec& f : faults) {
    dev::FaultId id = 0;
    REQUIRE(m.driver->fault_inject(f, &id).ok());
  }
  RunResult r;
  const Workload w = make_workload(16, 32, 2048, 4, 32, 77, true);
  auto h = ic::moe_dispatch(*b, map, w.inputs(), 4);
  REQUIRE_MESSAGE(h.ok(), h.status().to_string());
  RankRule rule = [&](uint32_t s, uint32_t t, bool shared, uint32_t e) -> uint32_t {
    if (!shared) return routed_rank_rule(map, s, t, e);
    if (s % 5 == 0) return s;
    const uint32_t node_reps[2][2] = {{0, 5}, {10, 15}};
    return node_reps[s / 8][(s + t) % 2];
  };
  r.routing_problems = check_routing(*b, *h, w, map, rule, true);
  const ic::MoeBufferLayout& l = b->layout();
  for (uint32_t d = 0; d < 16; ++d)
    for (uint32_t i = 0; i < h->recv[d].num_slots; ++i) {
      std::vector<uint8_t> bytes(l.payload_bytes);
      REQUIRE(m.memory->read(b->recv_slot(d, i) + l.header_bytes, bytes.data(), bytes.size()).ok());
      const ic::SlotInfo& si = h->recv[d].slots[i];
      r.received[{d, si.src_rank, si.src_token}] = std::move(bytes);
    }
  ic::PhaseStats cs;
  r.combined = combine_all(*b, *h, run_experts(*b, *h), &cs);
  r.reference_problems = check_against_reference(w, map, r.combined, false, true);
  r.dispatch_ns = h->stats.latency_ns;
  r.combine_ns = cs.latency_ns;
  r.stats = b->transport_stats();
  REQUIRE(m.driver->fault_counters(&r.faults).ok());
  return r;
}

dev::FaultSpec fault(dev::FaultKind kind, uint32_t target, double rate, double at_ns) {
  dev::FaultSpec f;
  f.kind = kind;
  f.target = target;
  f.rate = rate;
  f.at = ModelTime{at_ns};
  return f;
}

}  // namespace

TEST_CASE(
    "ic.moe_dispatch.faults: plane down and corruption mid-run: bit-identical results, "
    "zero lost bytes") {
  const RunResult clean = run({});
  CHECK(clean.routing_problems == 0);
  CHECK(clean.reference_problems == 0);
  CHECK(clean.stats.retransmissions == 0);
  CHECK(clean.stats.bytes_delivered == clean.stats.put_bytes);

  // Corruption and drops from the start of the run; plane 3 fails while dispatch's runs are
  // in flight (the first reservations return after about 0.8 us of modelled time; the
  // clean dispatch takes about 7 us).
  const RunResult faulty = run({fault(dev::FaultKind::kPacketCorrupt, dev::kInvalidId, 0.03, 0),
                                fault(dev::FaultKind::kPacketDrop, dev::kInvalidId, 0.01, 0),
                                fault(dev::FaultKind::kPlaneDown, 3, 0, 1000)});
  CHECK(faulty.routing_problems == 0);
  CHECK(faulty.reference_problems == 0);
  // Bit-identical: every (rank, source, token) slot holds the same bytes, and combine's
  // output is the same to the bit (slot positions may differ: reservations race).
  CHECK(faulty.received.size() == clean.received.size());
  CHECK(faulty.received == clean.received);
  CHECK(faulty.combined == clean.combined);
  // Exactly once: what arrived is what was asked, although packets were lost and resent.
  CHECK(faulty.stats.put_bytes == clean.stats.put_bytes);
  CHECK(faulty.stats.bytes_delivered == faulty.stats.put_bytes);
  CHECK(faulty.stats.errors == 0);
  CHECK(faulty.stats.packets_corrupted > 0);
  CHECK(faulty.stats.packets_lost > 0);
  CHECK(faulty.stats.retransmissions > 0);
  CHECK(faulty.stats.failovers > 0);
  CHECK(faulty.faults.packets_lost_plane_down > 0);  // the plane really failed mid-run
  CHECK(faulty.faults.packets_corrupted > 0);
  // Resends cost modelled time.
  CHECK(faulty.dispatch_ns + faulty.combine_ns > clean.dispatch_ns + clean.combine_ns);
}
