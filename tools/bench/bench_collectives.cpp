// Benchmarks of the collectives (make bench; moe-bench --filter coll).
//
//  coll.all_to_all_cm384: modelled time of an all-to-all of 16 KiB per pair over all 384
//    NPUs of cm384 in timing mode. Baseline: the raw driver all-to-all of the same bytes
//    (tools::timing_all_to_all: one descriptor per pair, no signals, no transport) on a
//    fresh machine in the same run; ratio = collective / raw (what the protocol's signals
//    and waits cost in the model; target <= 1.3). Check: the call succeeded and moved
//    n (n - 1) x 16 KiB.
//  coll.dispatch_hier_vs_flat_cm384: modelled time of a DeepSeek-V3-shaped decode dispatch
//    (token all-to-all, 384 NPUs, 16 tokens of 14336 bytes each per NPU, top-8 with
//    group-limited routing: the 8 destinations lie in 4 random nodes), hierarchical against
//    flat on the same routes; ratio = hierarchical / flat (below 1: faster). The note gives
//    the cross-node bytes of both. Check: hierarchical crosses fewer bytes.
//  coll.all_reduce_n16_wall: wall time of a functional all-reduce of 256k float32 per
//    member on n16 (16 members). Baseline: a naive host all-reduce of the same buffers in
//    the same run (read every member's buffer through the memory layer, sum in rank order,
//    write the result to every member); ratio = naive / collective wall time (above 1: the
//    collective is faster). Check: both results are bit-identical.
#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"
#include "interconnect/collectives.h"
#include "memory/global_memory.h"
#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"
#include "tools/lib/bench/harness.h"
#include "tools/lib/bench/sim_machine.h"
#include "tools/lib/smoke/fabric_smoke.h"

namespace {

using namespace moe;
using mem::GlobalAddr;

struct Machine : bench::SimMachine {
  std::unique_ptr<ic::Communicator> comm(ic::Mode mode) {
    std::vector<dev::NpuId> npus(driver->topology().num_npus());
    for (uint32_t i = 0; i < npus.size(); ++i) npus[i] = i;
    ic::CommConfig c;
    c.mode = mode;
    auto r = ic::Communicator::create(*transport, *memory, npus, c);
    return r.ok() ? std::move(r).value() : nullptr;
  }
  // One buffer per member NPU (untouched unless written).
  bool buffers(const ic::Communicator& comm, uint64_t bytes, std::vector<GlobalAddr>* out) {
    out->clear();
    for (uint32_t r = 0; r < comm.size(); ++r) {
      auto a = memory->allocate_local(comm.member(r).npu, std::max<uint64_t>(bytes, 64), 4096);
      if (!a.ok()) return false;
      out->push_back(a.value());
    }
    return true;
  }
};

}  // namespace

MOE_BENCHMARK(coll_all_to_all_cm384) {
  const uint64_t chunk = 16 << 10;
  double coll_ns = 0, raw_ns = 0;
  bool ok = false;
  {
    Machine m;
    std::vector<GlobalAddr> send, recv;
    if (m.open("cm384")) {
      auto comm = m.comm(ic::Mode::kTiming);
      const uint64_t n = comm ? comm->size() : 0;
      if (comm && m.buffers(*comm, chunk * n, &send) && m.buffers(*comm, chunk * n, &recv)) {
        auto r = comm->all_to_all(send, recv, chunk);
        ok = r.ok() && r.value().payload_bytes == n * (n - 1) * chunk;
        if (r.ok()) coll_ns = r.value().modelled_ns;
      }
    }
  }
  {
    Machine m;
    tools::AllToAllResult raw;
    ok = ok && m.open("cm384") && tools::timing_all_to_all(*m.driver, chunk, &raw).ok();
    raw_ns = raw.modelled_makespan.ns;
  }
  ctx.record({"coll.all_to_all_cm384", coll_ns / 1e3, "us", raw_ns / 1e3,
              raw_ns > 0 ? coll_ns / raw_ns : 0, "modelled", ok,
              "all-to-all 16 KiB/pair on 384 NPUs vs raw driver transfers; target ratio <= 1.3"});
}

MOE_BENCHMARK(coll_dispatch_hier_vs_flat_cm384) {
  const uint64_t token_bytes = 14336;  // DeepSeek-V3 hidden 7168 in bfloat16
  const uint32_t tokens_per_npu = ctx.quick ? 4 : 16;
  double ns[2] = {0, 0};
  uint64_t cross[2] = {0, 0};
  bool ok = true;
  for (int k = 0; k < 2; ++k) {
    Machine m;
    if (!m.open("cm384")) {
      ok = false;
      break;
    }
    auto comm = m.comm(ic::Mode::kTiming);
    if (!comm) {
      ok = false;
      break;
    }
    const dev::Topology& t = m.driver->topology();
    const uint32_t n = comm->size();
    std::mt19937_64 rng(5);
    ic::TokenRoutes routes(n);
    std::vector<uint32_t> nodes(t.num_nodes), dests;
    for (uint32_t s = 0; s < n && ok; ++s)
      for (uint32_t tk = 0; tk < tokens_per_npu; ++tk) {
        // Group-limited top-8: 4 nodes, then 8 distinct NPUs among their 32.
        for (uint32_t i = 0; i < nodes.size(); ++i) nodes[i] = i;
        std::shuffle(nodes.begin(), nodes.end(), rng);
        std::vector<uint32_t> pool;
        for (uint32_t g = 0; g < 4; ++g)
          for (dev::NpuId p : t.npus_of_node[nodes[g]]) pool.push_back(p);
        std::shuffle(pool.begin(), pool.end(), rng);
        pool.resize(8);
        ok = routes.add_token(s, pool).ok();  // ranks == NPU ids here
      }
    std::vector<GlobalAddr> send, recv;
    ok = ok && m.buffers(*comm, tokens_per_npu * token_bytes, &send);
    uint64_t most = 0;
    for (uint32_t d = 0; d < n; ++d) most = std::max(most, routes.recv_tokens(d));
    ok = ok && m.buffers(*comm, most * token_bytes, &recv);
    if (!ok) break;
    auto r = comm->token_all_to_all(routes, send, recv, token_bytes,
                                    k == 0 ? ic::TokenAlgorithm::kFlat
                                           : ic::TokenAlgorithm::kHierarchical);
    ok = r.ok();
    if (!ok) break;
    ns[k] = r.value().modelled_ns;
    cross[k] = r.value().cross_node_bytes;
  }
  ok = ok && cross[1] < cross[0];
  ctx.record({"coll.dispatch_hier_vs_flat_cm384", ns[1] / 1e3, "us", ns[0] / 1e3,
              ns[0] > 0 ? ns[1] / ns[0] : 0, "modelled", ok,
              strformat("hierarchical vs flat token all-to-all; cross-node bytes %.1f MB vs "
                        "%.1f MB",
                        cross[1] / 1e6, cross[0] / 1e6)});
}

MOE_BENCHMARK(coll_all_reduce_n16_wall) {
  const uint64_t count = 256 << 10;
  const uint64_t bytes = count * 4;
  Machine m;
  bool ok = m.open("n16");
  auto comm = ok ? m.comm(ic::Mode::kFunctional) : nullptr;
  std::vector<GlobalAddr> send, recv, naive;
  ok = comm && m.buffers(*comm, bytes, &send) && m.buffers(*comm, bytes, &recv) &&
       m.buffers(*comm, bytes, &naive);
  const uint32_t n = comm ? comm->size() : 0;
  std::mt19937_64 rng(3);
  std::vector<float> v(count);
  for (uint32_t r = 0; ok && r < n; ++r) {
    for (auto& x : v) x = static_cast<float>(rng() % 20001) / 1000.0f - 10.0f;
    ok = m.memory->write(send[r], v.data(), bytes).ok();
  }
  double coll_s = 1e30, naive_s = 1e30;
  std::vector<float> acc(count), in(count);
  const int rounds = ctx.quick ? 2 : 8;  // the first pays first-touch page faults
  for (int round = 0; ok && round < rounds; ++round) {
    int64_t t0 = wall_now_ns();
    ok = comm->all_reduce(send, recv, count, ic::DataType::kFloat32, ic::ReduceOp::kSum).ok();
    coll_s = std::min(coll_s, (wall_now_ns() - t0) * 1e-9);
    t0 = wall_now_ns();
    for (uint32_t r = 0; ok && r < n; ++r) {
      ok = m.memory->read(send[r], r == 0 ? acc.data() : in.data(), bytes).ok();
      if (r > 0)
        for (uint64_t i = 0; i < count; ++i) acc[i] += in[i];
    }
    for (uint32_t r = 0; ok && r < n; ++r) ok = m.memory->write(naive[r], acc.data(), bytes).ok();
    naive_s = std::min(naive_s, (wall_now_ns() - t0) * 1e-9);
  }
  for (uint32_t r = 0; ok && r < n; ++r) {
    ok = m.memory->read(recv[r], in.data(), bytes).ok() &&
         std::memcmp(in.data(), acc.data(), bytes) == 0;
  }
  comm.reset();
  ctx.record({"coll.all_reduce_n16_wall", coll_s * 1e3, "ms", naive_s * 1e3,
              coll_s > 0 ? naive_s / coll_s : 0, "wall", ok,
              "functional all-reduce 1 MiB float32 x 16 members vs a naive host all-reduce "
              "(ratio > 1: faster); results bit-identical"});
}
