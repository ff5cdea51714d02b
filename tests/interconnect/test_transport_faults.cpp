// Faults: a plane going down mid-transfer and corrupted / dropped packets injected mid-run
// leave results bit-identical to a fault-free run with every byte delivered exactly once
// (counted), resends and failovers counted; an operation to a lost NPU fails with kNpuLost
// and never hangs; retries that cannot succeed end in an error, not a loop.
#include <doctest/doctest.h>

#include "interconnect/transport.h"
#include "runtime/base/stats.h"
#include "tests/interconnect/transport_test_util.h"

using namespace ictest;
using moe::StatusCode;

namespace {

struct WorkloadResult {
  std::vector<uint8_t> remote, local, gotten;
  uint64_t flag = 0, counter = 0;
  uint64_t requested_bytes = 0;
  ic::EndpointStats stats;
  dev::FaultCounters faults;
};

// One endpoint on NPU 1 (node 0) drives large puts, coalesced small puts, a put_signal, a
// get and atomics at NPU 12 (node 1) and NPU 3.
WorkloadResult run_workload(Machine& m, const std::vector<dev::FaultSpec>& faults) {
  for (const auto& f : faults) {
    dev::FaultId id = 0;
    REQUIRE(m.driver->fault_inject(f, &id).ok());
  }
  const uint64_t kBig = 1 << 20;
  auto ep = m.endpoint(1);
  GlobalAddr src = m.alloc(1, 4 * kBig);
  GlobalAddr remote = m.alloc(12, 5 * kBig);
  GlobalAddr local = m.alloc(3, 64 * 1024);
  GlobalAddr got = m.alloc(1, 512 * 1024);
  GlobalAddr flag = m.alloc(12, 64), counter = m.alloc(12, 64);
  m.write(src, pattern(21, 4 * kBig));
  WorkloadResult r;
  for (uint32_t i = 0; i < 4; ++i) {
    REQUIRE(ep->put(remote + i * kBig, src + i * kBig, kBig).ok());
    r.requested_bytes += kBig;
  }
  for (uint32_t i = 0; i < 300; ++i) {
    auto v = pattern(i, 64);
    const GlobalAddr to = i % 3 == 0 ? local + (i * 97 % 900) * 64 : remote + 4 * kBig + i * 192;
    REQUIRE(ep->put_inline(to, v.data(), 64).ok());
    r.requested_bytes += 64;
  }
  REQUIRE(ep->put_signal(remote + 4 * kBig + 300 * 192, src, 256 * 1024, flag, 1,
                         ic::SignalOp::kSet)
              .ok());
  r.requested_bytes += 256 * 1024;
  for (uint32_t i = 0; i < 50; ++i) {
    uint64_t old = 0;
    REQUIRE(ep->fetch_add(counter, i + 1, &old).ok());
  }
  REQUIRE(ep->quiet().ok());
  REQUIRE(ep->get(got, remote + kBig / 2, 512 * 1024).ok());
  r.requested_bytes += 512 * 1024;
  r.remote = m.read(remote, 5 * kBig);
  r.local = m.read(local, 64 * 1024);
  r.gotten = m.read(got, 512 * 1024);
  r.flag = m.read_word(flag);
  r.counter = m.read_word(counter);
  r.stats = ep->stats();
  REQUIRE(m.driver->fault_counters(&r.faults).ok());
  return r;
}

dev::FaultSpec fault(dev::FaultKind kind, uint32_t target, double rate = 0, double at_ns = 0) {
  dev::FaultSpec f;
  f.kind = kind;
  f.target = target;
  f.rate = rate;
  f.at = ModelTime{at_ns};
  return f;
}

}  // namespace

TEST_CASE("ic.faults: plane down and corruption mid-run: bit-identical, every byte once") {
  Machine clean("n16", 5);
  WorkloadResult want = run_workload(clean, {});
  CHECK(want.stats.retransmissions == 0);
  CHECK(want.stats.bytes_delivered == want.requested_bytes);
  CHECK(want.flag == 1);
  CHECK(want.counter == 50 * 51 / 2);

  int64_t resent_before = 0, failovers_before = 0;
  REQUIRE(stats::find_stat("ic.retransmissions", &resent_before));
  REQUIRE(stats::find_stat("ic.failovers", &failovers_before));
  Machine faulty("n16", 5);
  WorkloadResult got = run_workload(
      faulty, {fault(dev::FaultKind::kPacketCorrupt, dev::kInvalidId, 0.02),
               fault(dev::FaultKind::kPacketDrop, dev::kInvalidId, 0.01, 500),
               fault(dev::FaultKind::kPlaneDown, 3, 0, 1500)});  // inside the first 1 MiB put
  CHECK(got.remote == want.remote);
  CHECK(got.local == want.local);
  CHECK(got.gotten == want.gotten);
  CHECK(got.flag == want.flag);
  CHECK(got.counter == want.counter);  // lost atomic requests never ran twice
  // Exactly once: what arrived is what was asked, although packets were lost and resent.
  CHECK(got.stats.bytes_delivered == got.requested_bytes);
  CHECK(got.stats.errors == 0);
  CHECK(got.stats.packets_corrupted > 0);
  CHECK(got.stats.packets_lost > 0);
  CHECK(got.stats.retransmissions > 0);
  CHECK(got.stats.retransmitted_packets >= got.stats.packets_lost + got.stats.packets_corrupted);
  CHECK(got.stats.failovers > 0);
  CHECK(got.faults.packets_lost_plane_down > 0);  // the plane really failed mid-transfer
  CHECK(got.faults.packets_corrupted > 0);
  // The process-wide counters saw them too (published at quiet).
  int64_t resent_after = 0, failovers_after = 0;
  REQUIRE(stats::find_stat("ic.retransmissions", &resent_after));
  REQUIRE(stats::find_stat("ic.failovers", &failovers_after));
  CHECK(resent_after - resent_before >= static_cast<int64_t>(got.stats.retransmissions));
  CHECK(failovers_after - failovers_before >= static_cast<int64_t>(got.stats.failovers));
}

TEST_CASE("ic.faults: a link down mid-transfer moves the rest to the other planes") {
  Machine clean("n8", 3);
  Machine faulty("n8", 3);
  std::vector<uint8_t> results[2];
  ic::EndpointStats stats[2];
  for (int k = 0; k < 2; ++k) {
    Machine& m = k == 0 ? clean : faulty;
    if (k == 1) {
      const dev::LinkId link = m.driver->topology().link_of(6, 2);  // NPU 6's plane-2 link
      dev::FaultId id = 0;
      REQUIRE(m.driver->fault_inject(fault(dev::FaultKind::kLinkDown, link, 0, 1000), &id).ok());
    }
    auto ep = m.endpoint(0);
    GlobalAddr src = m.alloc(0, 2 << 20), dst = m.alloc(6, 2 << 20);
    m.write(src, pattern(4, 2 << 20));
    REQUIRE(ep->put(dst, src, 2 << 20).ok());
    REQUIRE(ep->quiet().ok());
    results[k] = m.read(dst, 2 << 20);
    stats[k] = ep->stats();
  }
  CHECK(results[1] == results[0]);
  CHECK(results[1] == pattern(4, 2 << 20));
  CHECK(stats[1].bytes_delivered == 2u << 20);
  CHECK(stats[1].packets_lost > 0);
  CHECK(stats[1].failovers > 0);
  CHECK(stats[0].failovers == 0);
}

TEST_CASE("ic.faults: operations to a lost NPU fail with kNpuLost and never hang") {
  Machine m("n8");
  GlobalAddr src = m.alloc(0, 1 << 20);
  GlobalAddr on5 = m.alloc(5, 1 << 20);
  GlobalAddr on6 = m.alloc(6, 1 << 20);
  GlobalAddr mine = m.alloc(0, 1 << 20);
  auto ep = m.endpoint(0);
  auto fresh = m.endpoint(0);
  dev::FaultId id = 0;
  REQUIRE(m.driver->fault_inject(fault(dev::FaultKind::kNpuLost, 5), &id).ok());

  // A put is non-blocking: its failure comes back from quiet, naming the NPU.
  REQUIRE(ep->put(on5, src, 1 << 20).ok());
  Status s = ep->quiet();
  CHECK(s.code() == StatusCode::kNpuLost);
  CHECK(s.message().find("npu 5") != std::string::npos);
  CHECK(ep->quiet().ok());  // reported once
  // Now known lost: refused at the call.
  uint64_t v = 3, old = 0;
  CHECK(ep->put(on5, src, 64).code() == StatusCode::kNpuLost);
  CHECK(ep->put_inline(on5, &v, 8).code() == StatusCode::kNpuLost);
  // A coalesced put from an endpoint that did not know: at quiet.
  REQUIRE(fresh->put_inline(on5 + 64, &v, 8).ok());
  CHECK(fresh->quiet().code() == StatusCode::kNpuLost);
  // Blocking operations return it themselves.
  auto other = m.endpoint(2);
  GlobalAddr into = m.alloc(2, 4096);
  REQUIRE(other->get_nbi(into, on5, 4096).ok());  // non-blocking: reported by quiet
  CHECK(other->quiet().code() == StatusCode::kNpuLost);
  CHECK(other->get_nbi(into, on5, 4096).code() == StatusCode::kNpuLost);  // known: at once
  CHECK(other->get(into, on5, 4096).code() == StatusCode::kNpuLost);
  auto other2 = m.endpoint(3);
  CHECK(other2->fetch_add(on5, 1, &old).code() == StatusCode::kNpuLost);
  auto other3 = m.endpoint(4);
  CHECK(other3->signal(on5, 1, ic::SignalOp::kSet).code() == StatusCode::kNpuLost);
  CHECK(other3->put_signal(on6, src, 64, on5, 1, ic::SignalOp::kSet).code() ==
        StatusCode::kNpuLost);
  // The rest of the machine works on.
  REQUIRE(ep->put(on6, src, 4096).ok());
  REQUIRE(ep->get(mine, on6, 4096).ok());
  REQUIRE(ep->quiet().ok());
  // No endpoint on the lost NPU; a barrier whose other member never comes times out.
  ic::EndpointConfig c;
  c.npu = 5;
  CHECK(m.transport->open_endpoint(c).status().code() == StatusCode::kNpuLost);
  auto group = m.transport->create_group(std::vector<dev::NpuId>{0, 6});
  REQUIRE(group.ok());
  CHECK(ep->barrier_arrive(**group).ok());
  CHECK(ep->barrier_wait(**group, 20'000'000).code() == StatusCode::kTimeout);
}

TEST_CASE("ic.faults: an NPU lost mid-run fails what starts after, not what ended before") {
  Machine m("n8");
  auto ep = m.endpoint(0);
  GlobalAddr src = m.alloc(0, 1 << 20), dst = m.alloc(7, 1 << 20);
  dev::FaultId id = 0;
  REQUIRE(m.driver->fault_inject(fault(dev::FaultKind::kNpuLost, 7, 0, 50'000), &id).ok());
  REQUIRE(ep->put(dst, src, 1 << 20).ok());
  REQUIRE(ep->quiet().ok());  // ended well before 50 us
  ep->advance_to(ModelTime{60'000});
  REQUIRE(ep->put(dst, src, 1 << 20).ok());
  CHECK(ep->quiet().code() == StatusCode::kNpuLost);
}

TEST_CASE("ic.faults: when no plane can carry a put, retries end in an error and no signal") {
  ic::TransportOptions o;
  o.max_retries = 3;
  Machine m("n8", 1, o);
  for (dev::PlaneId p = 0; p < m.driver->topology().num_planes; ++p) {
    dev::FaultId id = 0;
    REQUIRE(m.driver->fault_inject(fault(dev::FaultKind::kPlaneDown, p), &id).ok());
  }
  auto ep = m.endpoint(0);
  GlobalAddr src = m.alloc(0, 4096), dst = m.alloc(4, 4096), flag = m.alloc(4, 64);
  REQUIRE(ep->put(dst, src, 4096).ok());
  Status s = ep->put_signal(dst, src, 64, flag, 1, ic::SignalOp::kSet);
  CHECK(s.code() == StatusCode::kPlaneDown);
  CHECK(s.message().find("not sent") != std::string::npos);
  CHECK(m.read_word(flag) == 0);  // the flag never announced data that did not arrive
  CHECK(ep->quiet().code() == StatusCode::kPlaneDown);
  CHECK(ep->stats().retransmissions >= 3);
  CHECK(ep->stats().errors >= 1);
  // Local atomics need no plane.
  uint64_t old = 0;
  CHECK(ep->fetch_add(m.alloc(0, 64), 1, &old).ok());
}
