// The token all-to-all, flat and hierarchical: the receive layout against a reference for
// random routes and groups, both algorithms byte-identical, and the hierarchical one
// crossing each node boundary once per (token, remote node): counted by the collective and
// by the driver's counters on the L1 -> L2 links.
#include <doctest/doctest.h>

#include <set>

#include "tests/interconnect/test_collectives_util.h"

using namespace colltest;
using moe::ic::TokenAlgorithm;

namespace {

// Token t of source s: words tag_word(s, 0, t * words + i).
std::vector<uint64_t> token_data(uint32_t s, uint32_t t, uint64_t words) {
  std::vector<uint64_t> v(words);
  for (uint64_t i = 0; i < words; ++i) v[i] = tag_word(s, 0, t * words + i);
  return v;
}

// Bytes and packets sent upward on every L1 -> L2 link.
struct Uplinks {
  uint64_t bytes = 0, packets = 0;
};
Uplinks uplinks(Machine& m) {
  Uplinks u;
  const dev::Topology& t = m.driver->topology();
  for (const dev::LinkDesc& l : t.links) {
    if (l.a.kind != dev::EndpointKind::kSwitch || l.b.kind != dev::EndpointKind::kSwitch) continue;
    const int up = t.switches[l.a.id].level == dev::SwitchLevel::kL1 ? 0 : 1;
    dev::LinkCounters c;
    REQUIRE(m.driver->link_counters(l.id, &c).ok());
    u.bytes += c.bytes[up];
    u.packets += c.packets[up];
  }
  return u;
}

struct TokenRun {
  std::vector<std::vector<uint64_t>> recv;  // per member
  ic::CollectiveResult result;
  Uplinks up;
};

TokenRun run_tokens(Machine& m, Communicator& comm, const ic::TokenRoutes& routes,
                    uint64_t token_bytes, TokenAlgorithm algorithm) {
  const uint32_t n = comm.size();
  const uint64_t words = token_bytes / 8;
  std::vector<GlobalAddr> send, recv;
  for (uint32_t s = 0; s < n; ++s) {
    send.push_back(alloc_on(m, comm.member(s).npu, routes.num_tokens(s) * token_bytes));
    recv.push_back(alloc_on(m, comm.member(s).npu, routes.recv_tokens(s) * token_bytes, 0xEE));
    for (uint32_t t = 0; t < routes.num_tokens(s); ++t)
      write(m, send[s] + t * token_bytes, token_data(s, t, words).data(), token_bytes);
  }
  const Uplinks before = uplinks(m);
  TokenRun run;
  run.result = ok_result(comm.token_all_to_all(routes, send, recv, token_bytes, algorithm));
  const Uplinks after = uplinks(m);
  run.up = {after.bytes - before.bytes, after.packets - before.packets};
  for (uint32_t d = 0; d < n; ++d) run.recv.push_back(read_words(m, recv[d], routes.recv_tokens(d) * words));
  return run;
}

// The reference layout: for each source in rank order, its tokens for d in token order.
void check_layout(const Communicator& comm, const ic::TokenRoutes& routes, uint64_t words,
                  const TokenRun& run, const char* algorithm) {
  for (uint32_t d = 0; d < comm.size(); ++d) {
    std::vector<uint64_t> want;
    for (uint32_t s = 0; s < comm.size(); ++s) {
      CHECK(routes.recv_offset_tokens(s, d) * words == want.size());
      for (uint32_t t = 0; t < routes.num_tokens(s); ++t)
        for (uint32_t e : routes.destinations(s, t))
          if (e == d) {
            CHECK(routes.recv_slot(s, t, d) * words == want.size());
            auto v = token_data(s, t, words);
            want.insert(want.end(), v.begin(), v.end());
          }
    }
    check_words(run.recv[d], want, std::string(algorithm) + " recv of member " + std::to_string(d));
  }
}

}  // namespace

TEST_CASE("ic.coll.hier: a token needed by 3 NPUs of a remote node crosses the boundary once") {
  const uint64_t token_bytes = 14336;  // one DeepSeek-V3 hidden state in bfloat16
  TokenRun runs[2];
  for (int k = 0; k < 2; ++k) {
    Machine m("n16");  // NPUs 0-7: node 0, 8-15: node 1
    std::vector<dev::NpuId> npus(16);
    for (uint32_t i = 0; i < 16; ++i) npus[i] = (i * 5) % 16;  // shuffled ranks
    auto comm = make_comm(m, npus);
    ic::TokenRoutes routes(16);
    const int src = comm->rank_of(2);
    const uint32_t dests[] = {static_cast<uint32_t>(comm->rank_of(9)),
                              static_cast<uint32_t>(comm->rank_of(12)),
                              static_cast<uint32_t>(comm->rank_of(15))};
    REQUIRE(routes.add_token(src, dests).ok());
    const auto algorithm = k == 0 ? TokenAlgorithm::kFlat : TokenAlgorithm::kHierarchical;
    runs[k] = run_tokens(m, *comm, routes, token_bytes, algorithm);
    check_layout(*comm, routes, token_bytes / 8, runs[k], k == 0 ? "flat" : "hierarchical");
  }
  const TokenRun& flat = runs[0];
  const TokenRun& hier = runs[1];
  CHECK(flat.recv == hier.recv);
  // The collective's own accounting.
  CHECK(flat.result.cross_node_bytes == 3 * token_bytes);
  CHECK(hier.result.cross_node_bytes == token_bytes);
  CHECK(hier.result.forwarded_bytes == 2 * token_bytes);
  CHECK(flat.result.forwarded_bytes == 0);
  // The driver's: the two algorithms send the same signals; the data packets that went up
  // from node 0 differ by exactly two copies of the token.
  const uint64_t packets = (token_bytes + 511) / 512;
  CHECK(flat.up.packets - hier.up.packets == 2 * packets);
  CHECK(flat.up.bytes - hier.up.bytes == 2 * (token_bytes + packets * 32));
}

TEST_CASE("ic.coll.hier: random routes on random groups: both algorithms match the reference") {
  std::mt19937_64 rng(31);
  for (const char* preset : {"n16", "n64"}) {
    Machine m(preset);
    const uint32_t npus = m.driver->topology().num_npus();
    for (int it = 0; it < 3; ++it) {
      const uint32_t n = 2 + static_cast<uint32_t>(rng() % (npus - 1));
      auto comm = make_comm(m, random_group(rng, npus, n));
      const uint64_t token_bytes = 8 * (1 + rng() % 300);
      const uint32_t top_k = 1 + static_cast<uint32_t>(rng() % std::min<uint32_t>(8, n));
      CAPTURE(preset);
      CAPTURE(n);
      CAPTURE(token_bytes);
      CAPTURE(top_k);
      ic::TokenRoutes routes(n);
      uint64_t flat_cross = 0, hier_cross = 0;
      const auto& topo = m.driver->topology();
      auto node = [&](uint32_t r) { return topo.npus[comm->member(r).npu].node; };
      for (uint32_t s = 0; s < n; ++s) {
        const uint32_t tokens = static_cast<uint32_t>(rng() % 13);  // 0 included
        for (uint32_t t = 0; t < tokens; ++t) {
          std::vector<uint32_t> all(n);
          for (uint32_t i = 0; i < n; ++i) all[i] = i;
          std::shuffle(all.begin(), all.end(), rng);
          all.resize(top_k);
          REQUIRE(routes.add_token(s, all).ok());
          std::set<uint32_t> remote_nodes;
          for (uint32_t d : all)
            if (node(d) != node(s)) {
              flat_cross += token_bytes;
              remote_nodes.insert(node(d));
            }
          hier_cross += remote_nodes.size() * token_bytes;
        }
      }
      TokenRun flat = run_tokens(m, *comm, routes, token_bytes, TokenAlgorithm::kFlat);
      TokenRun hier = run_tokens(m, *comm, routes, token_bytes, TokenAlgorithm::kHierarchical);
      check_layout(*comm, routes, token_bytes / 8, flat, "flat");
      check_layout(*comm, routes, token_bytes / 8, hier, "hierarchical");
      CHECK(flat.result.cross_node_bytes == flat_cross);
      CHECK(hier.result.cross_node_bytes == hier_cross);
      CHECK(hier.result.forwarded_bytes == flat_cross - hier_cross);
      CHECK(hier.up.bytes <= flat.up.bytes);
    }
  }
}

TEST_CASE("ic.coll.hier: routes bookkeeping and refusals") {
  ic::TokenRoutes routes(4);
  const uint32_t a[] = {1, 3};
  const uint32_t dup[] = {2, 2};
  const uint32_t out[] = {4};
  REQUIRE(routes.add_token(0, a).ok());
  REQUIRE(routes.add_token(2, a).ok());
  auto s = routes.add_token(1, dup);
  CHECK(s.code() == moe::StatusCode::kInvalidArgument);
  CHECK(s.message().find("destination 2 twice") != std::string::npos);
  s = routes.add_token(1, out);
  CHECK(s.code() == moe::StatusCode::kInvalidArgument);
  CHECK(s.message().find("destination 4") != std::string::npos);
  CHECK(routes.add_token(7, a).code() == moe::StatusCode::kInvalidArgument);
  CHECK(routes.num_tokens(1) == 0);  // refused tokens were not added
  CHECK(routes.recv_tokens(3) == 2);
  CHECK(routes.recv_offset_tokens(2, 3) == 1);
  CHECK(routes.recv_slot(2, 0, 3) == 1);
  CHECK(routes.recv_slot(2, 0, 2) == UINT64_MAX);
  CHECK(routes.recv_tokens_from(0, 1) == 1);
}

TEST_CASE("ic.coll.hier: modelled time of a group-limited dispatch stays near the flat one") {
  // n64 in timing mode: each token goes to 8 NPUs in 4 random nodes, so most remote nodes
  // need it twice. The hierarchical route halves the cross-node bytes; on this fabric
  // (no cross-node penalty) it costs at most a second hop, never a chain of them.
  const uint64_t token_bytes = 14336;
  double ns[2];
  uint64_t cross[2];
  for (int k = 0; k < 2; ++k) {
    Machine m("n64");
    const dev::Topology& t = m.driver->topology();
    std::vector<dev::NpuId> npus(64);
    for (uint32_t i = 0; i < 64; ++i) npus[i] = i;
    ic::CommConfig c;
    c.mode = ic::Mode::kTiming;
    auto comm = make_comm(m, npus, c);
    std::mt19937_64 rng(41);
    ic::TokenRoutes routes(64);
    for (uint32_t s = 0; s < 64; ++s)
      for (uint32_t tk = 0; tk < 8; ++tk) {
        std::vector<uint32_t> nodes(t.num_nodes), pool;
        for (uint32_t i = 0; i < nodes.size(); ++i) nodes[i] = i;
        std::shuffle(nodes.begin(), nodes.end(), rng);
        for (uint32_t g = 0; g < 4; ++g)
          for (dev::NpuId p : t.npus_of_node[nodes[g]]) pool.push_back(p);
        std::shuffle(pool.begin(), pool.end(), rng);
        pool.resize(8);
        REQUIRE(routes.add_token(s, pool).ok());
      }
    std::vector<GlobalAddr> send, recv;
    for (uint32_t r = 0; r < 64; ++r) {
      auto a = m.memory->allocate_local(r, 8 * token_bytes, 4096);
      auto b = m.memory->allocate_local(r, std::max<uint64_t>(64, routes.recv_tokens(r) * token_bytes), 4096);
      REQUIRE((a.ok() && b.ok()));
      send.push_back(a.value());
      recv.push_back(b.value());
    }
    auto r = ok_result(comm->token_all_to_all(
        routes, send, recv, token_bytes, k == 0 ? TokenAlgorithm::kFlat : TokenAlgorithm::kHierarchical));
    ns[k] = r.modelled_ns;
    cross[k] = r.cross_node_bytes;
  }
  MESSAGE("n64 dispatch, 8 tokens x top-8 per NPU: flat " << ns[0] / 1e3 << " us, "
          << cross[0] / 1e6 << " MB cross-node; hierarchical " << ns[1] / 1e3 << " us, "
          << cross[1] / 1e6 << " MB");
  CHECK(cross[1] < cross[0] * 3 / 4);
  CHECK(ns[1] < 2.5 * ns[0]);
}
