// Faults: packet drop and corruption reproducible from the seed (and different with another
// seed), an NPU lost never hangs, HBM errors reported on reads, bad fault specs refused.
#include <doctest/doctest.h>

#include <vector>

#include "tests/firmware-sim/sim_test_util.h"

using namespace simtest;
using moe::StatusCode;
using moe::dev::EngineKind;
using moe::dev::FaultKind;
using moe::dev::FaultSpec;

namespace {

struct LossRun {
  std::vector<bool> packet_arrived;  // per packet of the transfer
  uint32_t lost = 0, corrupted = 0;
  StatusCode status = StatusCode::kOk;
  moe::dev::FaultCounters counters;
};

// Injects `kind` at `rate` on every link, moves 512 packets from NPU 1 to NPU 6 in two
// transfers, and records which packets arrived.
LossRun lossy_run(uint64_t seed, FaultKind kind, double rate) {
  auto drv = make_driver("n8", seed);
  const auto& t = drv->topology();
  const uint64_t bytes = 256 * t.packet_bytes;
  Buffer src = make_buffer(*drv, 1, 2 * bytes);
  Buffer dst = make_buffer(*drv, 6, 2 * bytes);
  fill_pattern(src.host, 2 * bytes, 9);
  FaultSpec f;
  f.kind = kind;
  f.target = moe::dev::kInvalidId;
  f.rate = rate;
  moe::dev::FaultId id = 0;
  REQUIRE(drv->fault_inject(f, &id).ok());
  auto q = make_queue(*drv, 1, EngineKind::kFabric);
  auto done = run(*drv, q, {transfer(src.at(), dst.at(), bytes),
                            transfer(src.at(bytes), dst.at(bytes), bytes)});
  LossRun r;
  for (const auto& c : done) {
    r.lost += c.packets_lost;
    r.corrupted += c.packets_corrupted;
    if (c.status != StatusCode::kOk) r.status = c.status;
  }
  for (uint64_t p = 0; p < 2 * bytes / t.packet_bytes; ++p) {
    const uint64_t off = p * t.packet_bytes;
    r.packet_arrived.push_back(std::memcmp(src.host + off, dst.host + off, t.packet_bytes) == 0);
  }
  REQUIRE(drv->fault_counters(&r.counters).ok());
  return r;
}

uint32_t missing(const LossRun& r) {
  uint32_t n = 0;
  for (bool ok : r.packet_arrived) n += ok ? 0 : 1;
  return n;
}

}  // namespace

TEST_CASE("sim.faults: packet drops are reproducible from the seed and differ across seeds") {
  LossRun a = lossy_run(42, FaultKind::kPacketDrop, 0.05);
  LossRun b = lossy_run(42, FaultKind::kPacketDrop, 0.05);
  LossRun c = lossy_run(43, FaultKind::kPacketDrop, 0.05);
  CHECK(a.lost > 5);     // ~26 expected of 512
  CHECK(a.lost < 60);
  CHECK(a.status == StatusCode::kPacketLost);
  CHECK(missing(a) == a.lost);  // exactly the dropped packets were not written
  CHECK(a.counters.packets_dropped == a.lost);
  CHECK(a.packet_arrived == b.packet_arrived);
  CHECK(a.lost == b.lost);
  CHECK(a.packet_arrived != c.packet_arrived);
}

TEST_CASE("sim.faults: corrupted packets are counted and not written") {
  LossRun r = lossy_run(7, FaultKind::kPacketCorrupt, 0.1);
  CHECK(r.corrupted > 10);
  CHECK(r.lost == 0);
  CHECK(r.status == StatusCode::kPacketCorrupt);
  CHECK(missing(r) == r.corrupted);
  CHECK(r.counters.packets_corrupted == r.corrupted);
  CHECK(r.counters.packets_dropped == 0);
}

TEST_CASE("sim.faults: a drop fault on one link only hits routes through it") {
  auto drv = make_driver("n8", 3);
  const auto& t = drv->topology();
  FaultSpec f;
  f.kind = FaultKind::kPacketDrop;
  f.target = t.link_of(5, 0);
  f.rate = 1.0;
  moe::dev::FaultId id = 0;
  REQUIRE(drv->fault_inject(f, &id).ok());
  auto q = make_queue(*drv, 0, EngineKind::kFabric);
  const uint64_t bytes = 70 * t.packet_bytes;  // 10 packets per plane
  auto to5 = run_one(*drv, q, transfer({0, 0}, {5, 0}, bytes, 0x7f, false));
  CHECK(to5.packets_lost == 10);
  CHECK(to5.planes_failed == 1u);
  auto to4 = run_one(*drv, q, transfer({0, 0}, {4, 0}, bytes, 0x7f, false));
  CHECK(to4.packets_lost == 0);
  CHECK(to4.status == StatusCode::kOk);
  moe::dev::LinkCounters lc;
  REQUIRE(drv->link_counters(f.target, &lc).ok());
  CHECK(lc.packets_lost[1] == 10);  // dropped on the switch -> NPU 5 direction
  REQUIRE(drv->fault_clear(id).ok());
  auto again = run_one(*drv, q, transfer({0, 0}, {5, 0}, bytes, 0x7f, false));
  CHECK(again.packets_lost == 0);
}

TEST_CASE("sim.faults: an NPU lost fails every operation touching it, at once") {
  auto drv = make_driver("n8");
  Buffer a = make_buffer(*drv, 0, 8192);
  Buffer b = make_buffer(*drv, 3, 8192);
  auto q0 = make_queue(*drv, 0, EngineKind::kFabric);
  auto q3 = make_queue(*drv, 3, EngineKind::kFabric);
  auto k3 = make_queue(*drv, 3, EngineKind::kCompute);
  FaultSpec f;
  f.kind = FaultKind::kNpuLost;
  f.target = 3;
  moe::dev::FaultId id = 0;
  REQUIRE(drv->fault_inject(f, &id).ok());
  moe::dev::NpuState st;
  REQUIRE(drv->npu_state(3, &st).ok());
  CHECK(st.lost);

  auto c = run_one(*drv, q0, transfer(a.at(), b.at(), 4096));
  CHECK(c.status == StatusCode::kNpuLost);
  CHECK(c.end.ns == c.start.ns);
  c = run_one(*drv, q3, transfer(b.at(), a.at(), 4096));
  CHECK(c.status == StatusCode::kNpuLost);
  c = run_one(*drv, q0, atomic(moe::dev::AtomicOp::kFetchAdd, b.at(0), 1));
  CHECK(c.status == StatusCode::kNpuLost);
  moe::dev::WorkDescriptor k;
  k.kind = moe::dev::WorkKind::kKernel;
  k.kernel.flops = 1e9;
  c = run_one(*drv, k3, k);
  CHECK(c.status == StatusCode::kNpuLost);
  moe::dev::HbmRange r;
  CHECK(drv->hbm_reserve(3, 4096, 4096, &r).code() == StatusCode::kNpuLost);
  void* p = nullptr;
  CHECK(drv->hbm_map_host(3, b.range.offset, 4096, &p).code() == StatusCode::kNpuLost);
  moe::dev::QueueId q;
  CHECK(drv->queue_create(3, 0, EngineKind::kFabric, 0, &q).code() == StatusCode::kNpuLost);
  // Other NPUs are unaffected.
  c = run_one(*drv, q0, transfer(a.at(), a.at(4096), 4096));
  CHECK(c.status == StatusCode::kOk);
  moe::dev::FaultCounters fc;
  REQUIRE(drv->fault_counters(&fc).ok());
  CHECK(fc.operations_to_lost_npu == 4);

  REQUIRE(drv->fault_clear(id).ok());
  REQUIRE(drv->npu_state(3, &st).ok());
  CHECK_FALSE(st.lost);
  c = run_one(*drv, q0, transfer(a.at(), b.at(), 4096));
  CHECK(c.status == StatusCode::kOk);
  CHECK(drv->hbm_release(b.range).ok());
}

TEST_CASE("sim.faults: an HBM error fails the reads of its range and is counted") {
  auto drv = make_driver("n8");
  Buffer a = make_buffer(*drv, 2, 1 << 20);
  Buffer b = make_buffer(*drv, 4, 1 << 20);
  FaultSpec f;
  f.kind = FaultKind::kHbmError;
  f.target = 2;
  f.hbm_offset = a.range.offset + 65536;
  f.hbm_bytes = 4096;
  moe::dev::FaultId id = 0;
  REQUIRE(drv->fault_inject(f, &id).ok());
  auto q = make_queue(*drv, 2, EngineKind::kFabric);
  std::memset(b.host, 0x5a, 1 << 20);
  auto bad = run_one(*drv, q, transfer(a.at(), b.at(), 1 << 20));
  CHECK(bad.status == StatusCode::kHbmError);
  CHECK(b.host[0] == 0x5a);  // nothing written
  auto good = run_one(*drv, q, transfer(a.at(), b.at(), 65536));
  CHECK(good.status == StatusCode::kOk);
  auto into = run_one(*drv, q, transfer(b.at(), a.at(), 1 << 20));  // writing it is fine
  CHECK(into.status == StatusCode::kOk);

  auto hq = make_queue(*drv, 2, EngineKind::kHostCopy);
  std::vector<uint8_t> host(8192);
  moe::dev::WorkDescriptor d2h;
  d2h.kind = moe::dev::WorkKind::kHostCopy;
  d2h.host_copy.host = host.data();
  d2h.host_copy.device = a.at(65536 + 4000);
  d2h.host_copy.bytes = 200;
  d2h.host_copy.direction = moe::dev::CopyDirection::kDeviceToHost;
  CHECK(run_one(*drv, hq, d2h).status == StatusCode::kHbmError);

  moe::dev::NpuState st;
  REQUIRE(drv->npu_state(2, &st).ok());
  CHECK(st.hbm_errors == 2);
  moe::dev::FaultCounters fc;
  REQUIRE(drv->fault_counters(&fc).ok());
  CHECK(fc.hbm_errors_reported == 2);
}

TEST_CASE("sim.faults: bad fault specs are refused, naming the target") {
  auto drv = make_driver("n8");
  moe::dev::FaultId id = 0;
  FaultSpec f;
  f.kind = FaultKind::kPlaneDown;
  f.target = 7;
  moe::Status s = drv->fault_inject(f, &id);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("plane 7") != std::string::npos);
  f.kind = FaultKind::kLinkDown;
  f.target = 100000;
  CHECK(drv->fault_inject(f, &id).code() == StatusCode::kInvalidArgument);
  f.kind = FaultKind::kPacketDrop;
  f.target = moe::dev::kInvalidId;
  f.rate = 0;
  CHECK(drv->fault_inject(f, &id).code() == StatusCode::kInvalidArgument);
  f.rate = 1.5;
  CHECK(drv->fault_inject(f, &id).code() == StatusCode::kInvalidArgument);
  f.kind = FaultKind::kHbmError;
  f.target = 1;
  f.hbm_offset = drv->topology().hbm.capacity_bytes;
  f.hbm_bytes = 4096;
  CHECK(drv->fault_inject(f, &id).code() == StatusCode::kInvalidArgument);
  f.kind = FaultKind::kNpuLost;
  f.target = 8;
  CHECK(drv->fault_inject(f, &id).code() == StatusCode::kInvalidArgument);
  CHECK(drv->fault_clear(99).code() == StatusCode::kNotFound);
  moe::dev::FaultCounters fc;
  REQUIRE(drv->fault_counters(&fc).ok());
  CHECK(fc.faults_injected == 0);
}
