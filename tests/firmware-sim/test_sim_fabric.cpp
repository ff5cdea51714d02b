// Fabric timing model: the cost of one transfer, contention on a shared port, striping over
// planes, a plane down before and during a transfer, and the link counters. Expected
// figures are computed from the topology (hop latency, link bandwidth, packet sizes).
#include <doctest/doctest.h>

#include "tests/firmware-sim/sim_test_util.h"

using namespace simtest;
using moe::StatusCode;
using moe::dev::EngineKind;

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
