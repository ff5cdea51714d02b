// Modelled time of the collectives: timing mode on the full cm384 supernode against the
// bytes-over-bandwidth expectation computed from the topology, and the dependencies that
// signals carry (a late member delays exactly those who need its data; a scatter +
// all-gather broadcast beats the direct one for large messages; costs scale with bytes).
#include <doctest/doctest.h>

#include "tests/interconnect/test_collectives_util.h"

using namespace colltest;
using moe::ic::DataType;
using moe::ic::ReduceOp;

namespace {

// Buffers of `bytes` on each member's NPU, not touched (timing mode moves no payload).
std::vector<GlobalAddr> alloc_untouched(Machine& m, const Communicator& comm, uint64_t bytes) {
  std::vector<GlobalAddr> out;
  for (uint32_t r = 0; r < comm.size(); ++r) {
    auto a = m.memory->allocate_local(comm.member(r).npu, bytes, 4096);
    REQUIRE_MESSAGE(a.ok(), a.status().to_string());
    out.push_back(a.value());
  }
  return out;
}

std::vector<dev::NpuId> all_npus(Machine& m) {
  std::vector<dev::NpuId> v(m.driver->topology().num_npus());
  for (uint32_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

ic::CommConfig timing() {
  ic::CommConfig c;
  c.mode = ic::Mode::kTiming;
  return c;
}

}  // namespace

TEST_CASE("ic.coll.timing: all_to_all on cm384 in timing mode is near bytes over bandwidth") {
  Machine m("cm384");
  const dev::Topology& t = m.driver->topology();
  auto comm = make_comm(m, all_npus(m), timing());
  const uint32_t n = comm->size();
  REQUIRE(n == 384);
  const uint64_t chunk = 16 << 10;
  auto send = alloc_untouched(m, *comm, chunk * n);
  auto recv = alloc_untouched(m, *comm, chunk * n);
  auto r = ok_result(comm->all_to_all(send, recv, chunk));
  // Each NPU sends (and receives) (n - 1) chunks over all its planes; packets carry headers.
  const double packets = static_cast<double>((chunk + t.packet_bytes - 1) / t.packet_bytes);
  const double wire = (n - 1) * (chunk + packets * t.packet_header_bytes);
  const double expect_ns = wire / t.npu_fabric_bandwidth_gbps(0);
  MESSAGE("cm384 all_to_all of " << chunk << " B per pair: modelled " << r.modelled_ns / 1e3
                                 << " us, bytes/bandwidth " << expect_ns / 1e3 << " us, wall "
                                 << r.wall_ns / 1e6 << " ms");
  CHECK(r.modelled_ns >= 0.95 * expect_ns);
  CHECK(r.modelled_ns <= 2.0 * expect_ns);
  CHECK(r.payload_bytes == uint64_t{n} * (n - 1) * chunk);
  CHECK(r.cross_node_bytes == uint64_t{n} * (n - 8) * chunk);  // 8 NPUs per node
}

TEST_CASE("ic.coll.timing: a small all_to_all on cm384 pipelines its messages") {
  // 256 B per pair: the puts are coalesced per destination by the transport; every
  // message still leaves at the start, so the time is far below one round trip per peer.
  Machine m("cm384");
  auto comm = make_comm(m, all_npus(m), timing());
  const uint32_t n = comm->size();
  auto send = alloc_untouched(m, *comm, 256 * n);
  auto recv = alloc_untouched(m, *comm, 256 * n);
  auto r = ok_result(comm->all_to_all(send, recv, 256));
  // Serialised, each of the 383 messages would cost a round trip (>= 4 hops of 200 ns).
  const double serial_ns = (n - 1) * 4 * 200.0;
  MESSAGE("cm384 all_to_all of 256 B per pair: modelled " << r.modelled_ns / 1e3 << " us");
  CHECK(r.modelled_ns < serial_ns / 4);
}

TEST_CASE("ic.coll.timing: a late member delays exactly the members that wait for its data") {
  Machine m("n16");
  auto comm = make_comm(m, {4, 9, 1, 14, 7});
  const uint32_t n = comm->size();
  auto buf = alloc_each(m, *comm, 4096 * n);
  auto out = alloc_each(m, *comm, 4096 * n);
  ok_result(comm->barrier());
  const double t0 = comm->member_time(0).ns;
  const double late = t0 + 1e6;  // member 3 starts 1 ms later than the others
  comm->advance_member(3, ModelTime{late});
  // Broadcast from member 0: nobody waits for member 3, so the others finish early.
  ok_result(comm->broadcast(buf, 4096, 0));
  for (uint32_t r = 0; r < n; ++r) {
    CAPTURE(r);
    if (r == 3)
      CHECK(comm->member_time(r).ns >= late);
    else
      CHECK(comm->member_time(r).ns < t0 + 1e5);
  }
  // All-to-all: everyone needs member 3's chunk, which leaves at `late`.
  auto res = ok_result(comm->all_to_all(buf, out, 4096));
  for (uint32_t r = 0; r < n; ++r) {
    CAPTURE(r);
    CHECK(comm->member_time(r).ns > late);
  }
  CHECK(res.modelled_ns > 1e6);
  CHECK(res.modelled_ns < 1e6 + 1e5);
}

TEST_CASE("ic.coll.timing: a large broadcast scatters then all-gathers, beating the direct one") {
  const uint64_t bytes = 8 << 20;
  double ns[2];
  dev::Topology t;
  for (int k = 0; k < 2; ++k) {
    Machine m("n16");  // a fresh fabric each: both start on idle links at time 0
    t = m.driver->topology();
    ic::CommConfig c = timing();
    c.broadcast_direct_max_bytes = k == 0 ? bytes : 0;  // 0: the default (64 KiB)
    auto comm = make_comm(m, all_npus(m), c);
    auto buf = alloc_untouched(m, *comm, bytes);
    ns[k] = ok_result(comm->broadcast(buf, bytes, 5)).modelled_ns;
  }
  const double root_ns = 15.0 * bytes / t.npu_fabric_bandwidth_gbps(5);  // direct: 15 copies
  MESSAGE("broadcast 8 MiB on n16: direct " << ns[0] / 1e3 << " us, scatter+all-gather "
                                            << ns[1] / 1e3 << " us");
  CHECK(ns[0] >= root_ns);
  CHECK(ns[1] < ns[0] / 3);
  CHECK(ns[1] >= 2.0 * bytes * 15 / 16 / t.npu_fabric_bandwidth_gbps(5) * 0.9);
}

TEST_CASE("ic.coll.timing: all_reduce cost grows with bytes and includes the vector cost") {
  Machine m("n16");
  auto comm = make_comm(m, all_npus(m), timing());
  const uint32_t n = comm->size();
  const dev::Topology& t = m.driver->topology();
  double ns[2];
  const uint64_t counts[2] = {uint64_t{1} << 20, uint64_t{1} << 22};  // float32 elements
  for (int k = 0; k < 2; ++k) {
    auto send = alloc_untouched(m, *comm, counts[k] * 4);
    auto recv = alloc_untouched(m, *comm, counts[k] * 4);
    ns[k] = ok_result(comm->all_reduce(send, recv, counts[k], DataType::kFloat32, ReduceOp::kSum))
                .modelled_ns;
  }
  // Each member sends and receives 2 (n - 1) / n of the buffer; its vector cores read and
  // write (n + 1) / n of it.
  const double bytes = counts[1] * 4.0;
  const double wire_ns = 2.0 * (n - 1) / n * bytes / t.npu_fabric_bandwidth_gbps(0);
  const double vector_ns = (n + 1.0) / n * bytes / t.hbm.bandwidth_gbps;
  MESSAGE("all_reduce of 16 MiB float32 on n16: modelled " << ns[1] / 1e3 << " us (fabric "
                                                           << wire_ns / 1e3 << " us + vector "
                                                           << vector_ns / 1e3 << " us)");
  CHECK(ns[1] > 3.0 * ns[0]);
  CHECK(ns[1] >= wire_ns);
  CHECK(ns[1] <= 2.5 * (wire_ns + vector_ns));
}

TEST_CASE("ic.coll.timing: barrier releases every member after the last one arrives") {
  Machine m("n16");
  std::vector<ic::CommMember> members = {{2, 0}, {2, 1}, {11, 0}, {6, 1}, {15, 0}};
  auto c = Communicator::create(*m.transport, *m.memory, members);
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  auto& comm = *c.value();
  ok_result(comm.barrier());
  const double late = comm.member_time(0).ns + 250e3;
  comm.advance_member(1, ModelTime{late});  // die 1 of NPU 2 arrives 250 us late
  auto r = ok_result(comm.barrier());
  for (uint32_t k = 0; k < comm.size(); ++k) {
    CAPTURE(k);
    CHECK(comm.member_time(k).ns > late);
    CHECK(comm.member_time(k).ns < late + 20e3);  // a few fabric round trips
  }
  CHECK(r.modelled_ns > 250e3);
}
