// Fabric timing model: the cost of one transfer, contention on a shared port, striping over
// planes, a plane down before and during a transfer, and the link counters. Expected
// figures are computed from the topology (hop latency, link bandwidth, packet sizes).
#include <doctest/doctest.h>

#include "runtime/base/stats.h"
#include "tests/firmware-sim/sim_test_util.h"

using namespace simtest;
using moe::StatusCode;
using moe::dev::EngineKind;
using moe::dev::FaultSpec;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

double duration_ns(const moe::dev::Completion& c) { return c.end.ns - c.start.ns; }

// The link between an NPU and its L1 switch on a plane, and the hop latency / bandwidth.
const moe::dev::LinkDesc& npu_link(const moe::dev::Topology& t, uint32_t npu, uint32_t plane) {
  return t.links[t.link_of(npu, plane)];
}

}  // namespace

TEST_CASE("sim.fabric: one transfer costs hops x latency + wire bytes / bandwidth") {
  auto drv = make_driver("n16");
  const auto& t = drv->topology();
  const auto& l = npu_link(t, 0, 0);
  const double wire = wire_bytes(t, kMiB);

  // Inside a node, one plane: NPU -> L1 -> NPU, two hops.
  auto q0 = make_queue(*drv, 0, EngineKind::kFabric);
  auto c = run_one(*drv, q0, transfer({0, 0}, {1, 0}, kMiB, 1u << 0, false));
  CHECK(c.status == StatusCode::kOk);
  CHECK(c.packets == kMiB / t.packet_bytes);
  CHECK(c.planes_used == 1u);
  const double inside = 2 * l.latency_ns + wire / l.bandwidth_gbps;
  CHECK(duration_ns(c) == doctest::Approx(inside).epsilon(0.01));
  CHECK(duration_ns(c) == doctest::Approx(inside).epsilon(1e-9));  // the model is exact here

  // Across nodes: NPU -> L1 -> L2 -> L1 -> NPU, four hops; the uplinks are not the
  // bottleneck (they carry 8 NPU links' worth).
  auto q2 = make_queue(*drv, 2, EngineKind::kFabric);
  c = run_one(*drv, q2, transfer({2, 0}, {9, 0}, kMiB, 1u << 3, false));
  CHECK(c.status == StatusCode::kOk);
  CHECK(c.planes_used == (1u << 3));
  double across = 0;
  // Latency of every hop on the route: both NPU links plus both L1-L2 links.
  across += npu_link(t, 2, 3).latency_ns + npu_link(t, 9, 3).latency_ns;
  for (const auto& link : t.links)
    if (link.plane == 3 && link.a.kind == moe::dev::EndpointKind::kSwitch) across += link.latency_ns;
  across += wire / l.bandwidth_gbps;
  CHECK(duration_ns(c) == doctest::Approx(across).epsilon(0.01));

  // A one-packet transfer: latency dominated.
  c = run_one(*drv, q0, transfer({0, 0}, {1, 0}, 64, 1u << 0, false, c.end.ns));
  CHECK(c.packets == 1);
  CHECK(duration_ns(c) ==
        doctest::Approx(2 * l.latency_ns + (64.0 + t.packet_header_bytes) / l.bandwidth_gbps));
}

TEST_CASE("sim.fabric: two flows through one port take twice as long; disjoint flows do not") {
  auto drv = make_driver("n8");
  const uint64_t bytes = 4 * kMiB;
  auto q1 = make_queue(*drv, 1, EngineKind::kFabric);
  auto q2 = make_queue(*drv, 2, EngineKind::kFabric);
  auto q3 = make_queue(*drv, 3, EngineKind::kFabric);

  // Alone: 1 -> 0 on plane 0.
  auto alone = run_one(*drv, q1, transfer({1, 0}, {0, 0}, bytes, 1, false));
  const double single = duration_ns(alone);

  // Later, two sources into the same destination port at the same modelled time.
  const double t0 = alone.end.ns + 1000;
  auto a = run_one(*drv, q2, transfer({2, 0}, {0, 0}, bytes, 1, false, t0));
  auto b = run_one(*drv, q3, transfer({3, 0}, {0, 0}, bytes, 1, false, t0));
  const double makespan = std::max(a.end.ns, b.end.ns) - t0;
  CHECK(makespan == doctest::Approx(2 * single).epsilon(0.05));
  CHECK(a.end.ns - t0 == doctest::Approx(single).epsilon(0.01));  // first served first

  // Disjoint pairs (1 -> 4, 2 -> 5) at the same time: no interference.
  const double t1 = makespan + t0 + 1000;
  auto c = run_one(*drv, q1, transfer({1, 0}, {4, 0}, bytes, 1, false, t1));
  auto d = run_one(*drv, q2, transfer({2, 0}, {5, 0}, bytes, 1, false, t1));
  CHECK(c.end.ns - t1 == doctest::Approx(single).epsilon(0.01));
  CHECK(d.end.ns - t1 == doctest::Approx(single).epsilon(0.01));
}

TEST_CASE("sim.fabric: striping over 7 planes is ~7x faster than one") {
  auto drv = make_driver("n16");
  const uint64_t bytes = 64 * kMiB;
  auto q = make_queue(*drv, 0, EngineKind::kFabric);
  auto one = run_one(*drv, q, transfer({0, 0}, {12, 0}, bytes, 1u << 2, false));
  auto all = run_one(*drv, q, transfer({0, 0}, {12, 0}, bytes, 0x7f, false, one.end.ns));
  CHECK(one.status == StatusCode::kOk);
  CHECK(all.status == StatusCode::kOk);
  CHECK(all.planes_used == 0x7fu);
  CHECK(all.packets == bytes / drv->topology().packet_bytes);
  CHECK(duration_ns(one) / duration_ns(all) == doctest::Approx(7.0).epsilon(0.02));
  // Aggregate bandwidth close to 7 x 56 = 392 GB/s of wire bytes.
  const double gbps = wire_bytes(drv->topology(), bytes) / duration_ns(all);
  CHECK(gbps == doctest::Approx(392.0).epsilon(0.02));
}

TEST_CASE("sim.fabric: with a plane down traffic still arrives, at ~6/7 the rate") {
  auto drv = make_driver("n8");
  const uint64_t bytes = 8 * kMiB;
  Buffer src = make_buffer(*drv, 0, bytes);
  Buffer dst = make_buffer(*drv, 5, bytes);
  fill_pattern(src.host, bytes, 7);
  auto q = make_queue(*drv, 0, EngineKind::kFabric);

  auto healthy = run_one(*drv, q, transfer(src.at(), dst.at(), bytes));
  CHECK(healthy.status == StatusCode::kOk);
  CHECK(std::memcmp(src.host, dst.host, bytes) == 0);
  std::memset(dst.host, 0, bytes);

  moe::dev::FaultSpec down;
  down.kind = moe::dev::FaultKind::kPlaneDown;
  down.target = 4;
  moe::dev::FaultId id = 0;
  REQUIRE(drv->fault_inject(down, &id).ok());
  moe::dev::PlaneState ps;
  REQUIRE(drv->plane_state(4, &ps).ok());
  CHECK(ps.health == moe::dev::LinkHealth::kDown);
  moe::dev::LinkState ls;
  REQUIRE(drv->link_state(drv->topology().link_of(0, 4), &ls).ok());
  CHECK(ls.health == moe::dev::LinkHealth::kDown);

  auto degraded =
      run_one(*drv, q, transfer(src.at(), dst.at(), bytes, 0xffffffffu, true, healthy.end.ns));
  CHECK(degraded.status == StatusCode::kOk);
  CHECK(degraded.packets_lost == 0);
  CHECK(degraded.planes_used == (0x7fu & ~(1u << 4)));
  CHECK(std::memcmp(src.host, dst.host, bytes) == 0);
  CHECK(duration_ns(degraded) / duration_ns(healthy) == doctest::Approx(7.0 / 6.0).epsilon(0.02));

  // Only the down plane asked for: nothing is sent.
  auto refused = run_one(*drv, q, transfer(src.at(), dst.at(), bytes, 1u << 4, true));
  CHECK(refused.status == StatusCode::kPlaneDown);
  CHECK(refused.packets == 0);

  REQUIRE(drv->fault_clear(id).ok());
  REQUIRE(drv->plane_state(4, &ps).ok());
  CHECK(ps.health == moe::dev::LinkHealth::kUp);
  CHECK(drv->fault_clear(id).code() == StatusCode::kNotFound);
}

TEST_CASE("sim.fabric: a plane going down mid-transfer loses the packets sent after; the "
          "rest arrive") {
  auto drv = make_driver("n8");
  const auto& t = drv->topology();
  const uint64_t bytes = 7 * 1024 * t.packet_bytes;  // 1024 packets per plane
  Buffer src = make_buffer(*drv, 2, bytes);
  Buffer dst = make_buffer(*drv, 3, bytes);
  fill_pattern(src.host, bytes, 3);
  std::memset(dst.host, 0, bytes);
  auto q = make_queue(*drv, 2, EngineKind::kFabric);

  // The flow on each plane takes 1024 x 544 / 56 ns; plane 1 fails half way through.
  const double flow_ns = 1024.0 * (t.packet_bytes + t.packet_header_bytes) / 56.0;
  moe::dev::FaultSpec down;
  down.kind = moe::dev::FaultKind::kPlaneDown;
  down.target = 1;
  down.at = moe::ModelTime{flow_ns / 2};
  moe::dev::FaultId id = 0;
  REQUIRE(drv->fault_inject(down, &id).ok());

  auto c = run_one(*drv, q, transfer(src.at(), dst.at(), bytes));
  CHECK(c.status == StatusCode::kPlaneDown);
  CHECK(c.planes_failed == (1u << 1));
  CHECK(c.planes_used == 0x7fu);
  CHECK(c.packets == 7 * 1024);
  CHECK(c.packets_lost == doctest::Approx(512).epsilon(0.01));
  // Exactly the lost packets were not written: count packets whose bytes differ.
  uint32_t missing = 0;
  for (uint64_t p = 0; p < bytes / t.packet_bytes; ++p) {
    const uint64_t off = p * t.packet_bytes;
    if (std::memcmp(src.host + off, dst.host + off, t.packet_bytes) != 0) ++missing;
  }
  CHECK(missing == c.packets_lost);
  moe::dev::FaultCounters fc;
  REQUIRE(drv->fault_counters(&fc).ok());
  CHECK(fc.packets_lost_plane_down == c.packets_lost);
  CHECK(fc.faults_injected == 1);
  moe::dev::LinkCounters lc;
  REQUIRE(drv->link_counters(t.link_of(2, 1), &lc).ok());
  CHECK(lc.packets_lost[0] == c.packets_lost);  // NPU 2 is endpoint a of its links
}

TEST_CASE("sim.fabric: link counters count wire bytes and packets per direction") {
  auto drv = make_driver("n8");
  const auto& t = drv->topology();
  auto q = make_queue(*drv, 6, EngineKind::kFabric);
  const uint64_t bytes = 100000;
  auto c = run_one(*drv, q, transfer({6, 0}, {7, 0}, bytes, 1u << 5, false));
  REQUIRE(c.status == StatusCode::kOk);
  moe::dev::LinkCounters up, down;
  REQUIRE(drv->link_counters(t.link_of(6, 5), &up).ok());
  REQUIRE(drv->link_counters(t.link_of(7, 5), &down).ok());
  const uint64_t packets = (bytes + t.packet_bytes - 1) / t.packet_bytes;
  CHECK(up.packets[0] == packets);
  CHECK(up.bytes[0] == static_cast<uint64_t>(wire_bytes(t, bytes)));
  CHECK(up.packets[1] == 0);
  CHECK(down.packets[1] == packets);  // switch -> NPU 7 is b -> a
  CHECK(up.busy[0].ns == doctest::Approx(wire_bytes(t, bytes) / 56.0));
  moe::dev::LinkCounters other;
  REQUIRE(drv->link_counters(t.link_of(6, 4), &other).ok());
  CHECK(other.packets[0] == 0);
  CHECK(drv->link_counters(static_cast<uint32_t>(t.links.size()), &other).code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("sim.fabric: a link down moves traffic off its plane for the routes through it") {
  auto drv = make_driver("n16");
  const auto& t = drv->topology();
  moe::dev::FaultSpec f;
  f.kind = moe::dev::FaultKind::kLinkDown;
  f.target = t.link_of(9, 2);  // NPU 9's link on plane 2
  moe::dev::FaultId id = 0;
  REQUIRE(drv->fault_inject(f, &id).ok());
  moe::dev::PlaneState ps;
  REQUIRE(drv->plane_state(2, &ps).ok());
  CHECK(ps.health == moe::dev::LinkHealth::kUp);
  CHECK(ps.links_down == 1);
  auto q = make_queue(*drv, 0, EngineKind::kFabric);
  auto to9 = run_one(*drv, q, transfer({0, 0}, {9, 0}, kMiB, 0x7f, false));
  CHECK(to9.status == StatusCode::kOk);
  CHECK(to9.planes_used == (0x7fu & ~(1u << 2)));
  auto to10 = run_one(*drv, q, transfer({0, 0}, {10, 0}, kMiB, 0x7f, false));
  CHECK(to10.planes_used == 0x7fu);
  auto only = run_one(*drv, q, transfer({0, 0}, {9, 0}, kMiB, 1u << 2, false));
  CHECK(only.status == StatusCode::kLinkDown);
}

TEST_CASE("sim.fabric: the striped fast path and the per-plane path give the same times") {
  // Driver b carries a drop fault on a link none of these routes use: it takes the
  // per-plane path for every transfer, driver a the plane-bundle fast path.
  auto a = make_driver("n16");
  auto b = make_driver("n16");
  FaultSpec unrelated;
  unrelated.kind = moe::dev::FaultKind::kPacketDrop;
  unrelated.target = b->topology().link_of(15, 6);
  unrelated.rate = 0.5;
  moe::dev::FaultId id = 0;
  REQUIRE(b->fault_inject(unrelated, &id).ok());
  const uint64_t sizes[] = {7 * 512 * 100, 1000003, 4 * kMiB + 17, 64 * 1024};
  const uint32_t src[] = {0, 1, 0, 2};
  const uint32_t dst[] = {9, 9, 3, 9};
  std::vector<moe::dev::QueueId> qa, qb;
  for (uint32_t npu = 0; npu < 3; ++npu) {
    qa.push_back(make_queue(*a, npu, EngineKind::kFabric));
    qb.push_back(make_queue(*b, npu, EngineKind::kFabric));
  }
  for (int i = 0; i < 4; ++i) {
    auto w = transfer({src[i], 0}, {dst[i], 0}, sizes[i], 0x7f, false, i == 3 ? 5000.0 : 0.0);
    auto ca = run_one(*a, qa[src[i]], w);
    auto cb = run_one(*b, qb[src[i]], w);
    CHECK(ca.status == StatusCode::kOk);
    CHECK(cb.status == StatusCode::kOk);
    CHECK(ca.planes_used == cb.planes_used);
    CHECK(ca.packets == cb.packets);
    CHECK(ca.end.ns == doctest::Approx(cb.end.ns).epsilon(1e-9));
  }
  for (uint32_t l = 0; l < a->topology().links.size(); l += 7) {
    moe::dev::LinkCounters la, lb;
    REQUIRE(a->link_counters(l, &la).ok());
    REQUIRE(b->link_counters(l, &lb).ok());
    CHECK(la.bytes[0] == lb.bytes[0]);
    CHECK(la.bytes[1] == lb.bytes[1]);
    CHECK(la.packets[0] == lb.packets[0]);
    CHECK(la.packets[1] == lb.packets[1]);
  }
}

TEST_CASE("sim.fabric: work scheduled later but ready earlier uses the port's idle time") {
  auto drv = make_driver("n8");
  auto q1 = make_queue(*drv, 1, EngineKind::kFabric);
  auto q2 = make_queue(*drv, 2, EngineKind::kFabric);
  // First scheduled: 1 -> 0 ready at 100 us. Then 2 -> 0 ready at 0: it fits before.
  auto late = run_one(*drv, q1, transfer({1, 0}, {0, 0}, kMiB, 1, false, 100000.0));
  auto early = run_one(*drv, q2, transfer({2, 0}, {0, 0}, kMiB, 1, false, 0.0));
  const double single = late.end.ns - late.start.ns;
  CHECK(early.end.ns - early.start.ns == doctest::Approx(single).epsilon(0.01));
  CHECK(early.end.ns < late.start.ns);
  // A third, ready at 90 us, overlaps the busy time: it is delayed by about the overlap.
  auto q3 = make_queue(*drv, 3, EngineKind::kFabric);
  auto overlap = run_one(*drv, q3, transfer({3, 0}, {0, 0}, kMiB, 1, false, 90000.0));
  CHECK(overlap.end.ns > 90000.0 + single);
  CHECK(overlap.end.ns == doctest::Approx(100000.0 + 2 * single - 10000.0).epsilon(0.05));
}

TEST_CASE("sim.fabric: the L2 is not oversubscribed: a node's 8 NPUs reach another node at "
          "full rate, and striped traffic is counted on every hop") {
  auto drv = make_driver("n16");
  const auto& t = drv->topology();
  const uint64_t bytes = 7 * 512 * 200;  // 200 packets per plane
  std::vector<moe::dev::Completion> done;
  for (uint32_t i = 0; i < 8; ++i) {
    auto q = make_queue(*drv, i, EngineKind::kFabric);
    done.push_back(run_one(*drv, q, transfer({i, 0}, {8 + i, 0}, bytes, 0x7f, false)));
  }
  const double single = done[0].end.ns - done[0].start.ns;
  for (const auto& c : done) CHECK(c.end.ns - c.start.ns == doctest::Approx(single).epsilon(1e-6));
  // Every L1 -> L2 link of node 0 carried the 8 transfers' share of its plane.
  const uint64_t per_plane_wire = 200 * (t.packet_bytes + t.packet_header_bytes);
  uint32_t uplinks = 0;
  for (const auto& l : t.links) {
    if (l.a.kind != moe::dev::EndpointKind::kSwitch || t.switches[l.a.id].node != 0) continue;
    moe::dev::LinkCounters c;
    REQUIRE(drv->link_counters(l.id, &c).ok());
    CHECK(c.bytes[0] == 8 * per_plane_wire);
    CHECK(c.packets[0] == 8 * 200);
    CHECK(c.bytes[1] == 0);
    ++uplinks;
  }
  CHECK(uplinks == t.num_planes);
  moe::dev::LinkCounters first;
  REQUIRE(drv->link_counters(t.link_of(0, 3), &first).ok());
  CHECK(first.bytes[0] == per_plane_wire);
  int64_t transfers = 0;
  CHECK(moe::stats::find_stat("sim.transfers", &transfers));
  CHECK(transfers >= 8);
}
