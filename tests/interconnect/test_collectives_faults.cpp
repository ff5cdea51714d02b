// Faults under collectives: corrupted and dropped packets and a plane going down in the
// middle of a sequence of collectives leave every result bit-identical to a fault-free run,
// with every byte delivered exactly once (the transport resends; the collectives never
// see it). A lost NPU fails the collective promptly, naming it, and breaks the communicator.
#include <doctest/doctest.h>

#include "tests/interconnect/test_collectives_util.h"

using namespace colltest;
using moe::StatusCode;
using moe::ic::DataType;
using moe::ic::ReduceOp;

namespace {

struct RunResult {
  std::vector<std::vector<uint8_t>> outputs;  // every output buffer after the run
  ic::EndpointStats stats;
  dev::FaultCounters faults;
  double end_ns = 0;
  double first_end_ns = 0;  // end of the first collective (the all-to-all)
};

dev::FaultSpec fault(dev::FaultKind kind, uint32_t target, double rate, double at_ns) {
  dev::FaultSpec f;
  f.kind = kind;
  f.target = target;
  f.rate = rate;
  f.at = ModelTime{at_ns};
  return f;
}

// The same seeded sequence of collectives over all 16 NPUs of n16 (in a shuffled order).
RunResult run_sequence(const std::vector<dev::FaultSpec>& faults) {
  Machine m("n16", 7);
  for (const auto& f : faults) {
    dev::FaultId id = 0;
    REQUIRE(m.driver->fault_inject(f, &id).ok());
  }
  std::mt19937_64 rng(21);
  auto comm = make_comm(m, random_group(rng, 16, 16));
  const uint32_t n = comm->size();
  RunResult out;
  auto keep = [&](const std::vector<GlobalAddr>& bufs, uint64_t bytes) {
    for (GlobalAddr a : bufs) out.outputs.push_back(read(m, a, bytes));
  };
  auto random_bytes = [&](uint64_t bytes) {
    std::vector<uint8_t> v(bytes);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
  };
  // all_to_all, 16 KiB per pair.
  {
    const uint64_t chunk = 16 << 10;
    auto send = alloc_each(m, *comm, chunk * n), recv = alloc_each(m, *comm, chunk * n);
    for (GlobalAddr a : send) write(m, a, random_bytes(chunk * n).data(), chunk * n);
    out.first_end_ns = ok_result(comm->all_to_all(send, recv, chunk)).end.ns;
    keep(recv, chunk * n);
  }
  // all_reduce of 64k float32 (several scratch slices), reduce_scatter of bfloat16.
  {
    const uint64_t count = 64000;
    auto send = alloc_each(m, *comm, count * 4), recv = alloc_each(m, *comm, count * 4);
    for (GlobalAddr a : send) {
      std::vector<float> v(count);
      for (auto& x : v) x = static_cast<float>(static_cast<int64_t>(rng() % 2001) - 1000) / 7.0f;
      write(m, a, v.data(), count * 4);
    }
    ok_result(comm->all_reduce(send, recv, count, DataType::kFloat32, ReduceOp::kSum));
    keep(recv, count * 4);
    ok_result(comm->reduce_scatter(send, recv, count / n, DataType::kBFloat16, ReduceOp::kSum));
    keep(recv, count / n * 2);
  }
  // all_gather and a large broadcast (scatter + all-gather).
  {
    const uint64_t bytes = 100 << 10;
    auto send = alloc_each(m, *comm, bytes), recv = alloc_each(m, *comm, bytes * n);
    for (GlobalAddr a : send) write(m, a, random_bytes(bytes).data(), bytes);
    ok_result(comm->all_gather(send, recv, bytes));
    keep(recv, bytes * n);
    ok_result(comm->broadcast(send, bytes, 3));
    keep(send, bytes);
  }
  // Hierarchical token all-to-all, top-4 of 16.
  {
    const uint64_t token_bytes = 4096;
    ic::TokenRoutes routes(n);
    for (uint32_t s = 0; s < n; ++s)
      for (uint32_t t = 0; t < 24; ++t) {
        std::vector<uint32_t> all(n);
        for (uint32_t i = 0; i < n; ++i) all[i] = i;
        std::shuffle(all.begin(), all.end(), rng);
        all.resize(4);
        REQUIRE(routes.add_token(s, all).ok());
      }
    std::vector<GlobalAddr> send, recv;
    for (uint32_t r = 0; r < n; ++r) {
      send.push_back(alloc_on(m, comm->member(r).npu, 24 * token_bytes));
      recv.push_back(alloc_on(m, comm->member(r).npu, routes.recv_tokens(r) * token_bytes));
      write(m, send[r], random_bytes(24 * token_bytes).data(), 24 * token_bytes);
    }
    ok_result(comm->token_all_to_all(routes, send, recv, token_bytes,
                                     ic::TokenAlgorithm::kHierarchical));
    for (uint32_t r = 0; r < n; ++r)
      out.outputs.push_back(read(m, recv[r], routes.recv_tokens(r) * token_bytes));
  }
  ok_result(comm->barrier());
  out.stats = comm->transport_stats();
  REQUIRE(m.driver->fault_counters(&out.faults).ok());
  for (uint32_t r = 0; r < n; ++r) out.end_ns = std::max(out.end_ns, comm->member_time(r).ns);
  return out;
}

}  // namespace

TEST_CASE("ic.coll.faults: plane down and corruption mid-run: bit-identical, no byte lost") {
  const RunResult clean = run_sequence({});
  CHECK(clean.stats.retransmissions == 0);
  CHECK(clean.stats.errors == 0);
  CHECK(clean.stats.bytes_delivered == clean.stats.put_bytes);
  // Faults from early on, and plane 2 failing in the middle of the first collective.
  const RunResult faulty = run_sequence(
      {fault(dev::FaultKind::kPacketCorrupt, dev::kInvalidId, 0.01, 0),
       fault(dev::FaultKind::kPacketDrop, dev::kInvalidId, 0.005, 0),
       fault(dev::FaultKind::kPlaneDown, 2, 0, clean.first_end_ns / 2)});
  REQUIRE(faulty.outputs.size() == clean.outputs.size());
  for (size_t i = 0; i < clean.outputs.size(); ++i) {
    CAPTURE(i);
    CHECK(faulty.outputs[i] == clean.outputs[i]);
  }
  // Every byte asked for arrived exactly once, although packets were lost and resent.
  CHECK(faulty.stats.put_bytes == clean.stats.put_bytes);
  CHECK(faulty.stats.bytes_delivered == faulty.stats.put_bytes);
  CHECK(faulty.stats.errors == 0);
  CHECK(faulty.stats.packets_corrupted > 0);
  CHECK(faulty.stats.packets_lost > 0);
  CHECK(faulty.stats.retransmissions > 0);
  CHECK(faulty.stats.failovers > 0);
  CHECK(faulty.faults.packets_lost_plane_down > 0);  // the plane failed mid-run
  CHECK(faulty.end_ns > clean.end_ns);               // resends cost modelled time
  MESSAGE("n16 sequence: clean " << clean.end_ns / 1e3 << " us, faulty " << faulty.end_ns / 1e3
                                 << " us, " << faulty.stats.retransmissions << " resends, "
                                 << faulty.stats.failovers << " failovers");
}

TEST_CASE("ic.coll.faults: a lost NPU fails the collective promptly and breaks the communicator") {
  Machine m("n16");
  auto comm = make_comm(m, {2, 11, 5, 8});
  auto send = alloc_each(m, *comm, 4096 * 4), recv = alloc_each(m, *comm, 4096 * 4);
  ok_result(comm->all_to_all(send, recv, 4096));
  dev::FaultId id = 0;
  REQUIRE(m.driver->fault_inject(fault(dev::FaultKind::kNpuLost, 5, 0, 0), &id).ok());
  const int64_t t0 = wall_now_ns();
  auto r = comm->all_to_all(send, recv, 4096);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kNpuLost);
  CHECK(r.status().message().find("npu 5") != std::string::npos);
  CHECK(r.status().message().find("all_to_all") != std::string::npos);
  CHECK(wall_now_ns() - t0 < 5'000'000'000);  // no wait ran into its timeout
  CHECK_FALSE(comm->healthy());
  auto again = comm->barrier();
  REQUIRE_FALSE(again.ok());
  CHECK(again.status().code() == StatusCode::kFailedPrecondition);
}
