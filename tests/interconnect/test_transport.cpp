// Transport conformance: every operation moves exactly the bytes it names (data encodes its
// source), coalescing cuts fabric operations and modelled time, atomics from many endpoints
// sum exactly, and bad input is refused before anything is issued.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

#include "interconnect/transport.h"
#include "runtime/base/options.h"
#include "tests/interconnect/transport_test_util.h"

using namespace ictest;
using moe::StatusCode;

TEST_CASE("ic.transport: open_transport picks an implementation and reports its caps") {
  Machine m("n8");
  CHECK(m.transport->name() == "ub");
  const ic::TransportCaps& c = m.transport->caps();
  CHECK(c.packet_bytes == m.driver->topology().packet_bytes);
  CHECK(c.num_planes == m.driver->topology().num_planes);
  CHECK(c.max_inline_bytes >= 8);
  CHECK(c.max_inline_bytes <= c.coalesce_bytes);
  CHECK(c.coalesce_max_put_bytes <= c.coalesce_bytes);
  CHECK(c.max_segments > 1);
  CHECK(c.functional);
  CHECK(!ic::transport_names().empty());

  ic::TransportOptions o;
  o.name = "no-such-transport";
  auto t = ic::open_transport(*m.driver, *m.memory, o);
  REQUIRE(!t.ok());
  CHECK(t.status().code() == StatusCode::kNotFound);
  CHECK(t.status().message().find("ub") != std::string::npos);

  ic::EndpointConfig bad;
  bad.npu = 99;
  CHECK(m.transport->open_endpoint(bad).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("ic.put: puts and gets of every size move exactly the bytes named") {
  for_each_transport("n16", [](Machine& m) {
    auto ep = m.endpoint(2);
    const uint64_t sizes[] = {1, 7, 63, 64, 65, 511, 512, 513, 4096, 70000, 1 << 20};
    uint64_t tag = 1, requested = 0;
    for (uint64_t bytes : sizes) {
      CAPTURE(bytes);
      GlobalAddr src = m.alloc(2, bytes + 16);
      GlobalAddr remote = m.alloc(11, bytes + 16);  // other node
      GlobalAddr back = m.alloc(2, bytes + 16);
      auto data = pattern(tag++, bytes);
      m.write(src + 3, data);
      REQUIRE(ep->put(remote + 5, src + 3, bytes).ok());
      REQUIRE(ep->quiet().ok());
      auto got = m.read(remote, bytes + 16);
      CHECK(std::equal(data.begin(), data.end(), got.begin() + 5));
      CHECK(std::all_of(got.begin(), got.begin() + 5, [](uint8_t b) { return b == 0; }));
      CHECK(std::all_of(got.begin() + 5 + bytes, got.end(), [](uint8_t b) { return b == 0; }));
      REQUIRE(ep->get(back + 1, remote + 5, bytes).ok());
      auto round = m.read(back + 1, bytes);
      CHECK(round == data);
      requested += 2 * bytes;
    }
    CHECK(ep->stats().bytes_delivered == requested);
    CHECK(ep->stats().errors == 0);
  });
}

TEST_CASE("ic.put: a range over pages on different NPUs is split and lands on each") {
  Machine m("n8");
  auto ep = m.endpoint(0);
  const uint64_t page = m.memory->page_bytes();
  mem::AllocRequest req;
  req.policy = mem::Policy::kInterleaved;
  req.bytes = 4 * page;
  req.npus = {1, 4, 6};
  auto inter = m.memory->allocate(req);
  REQUIRE(inter.ok());
  GlobalAddr src = m.alloc(0, 3 * page);
  auto data = pattern(77, 3 * page);
  m.write(src, data);
  const GlobalAddr dst = inter->base + page / 2;  // crosses three page boundaries
  REQUIRE(ep->put(dst, src, 3 * page).ok());
  REQUIRE(ep->quiet().ok());
  CHECK(m.read(dst, 3 * page) == data);
  std::set<dev::NpuId> npus;
  for (uint64_t off = 0; off < 3 * page; off += page / 2) {
    dev::DevicePtr p;
    REQUIRE(m.memory->translate(dst + off, &p));
    npus.insert(p.npu);
  }
  CHECK(npus.size() == 3);
  // And back, with a get whose source spans the same pages.
  GlobalAddr back = m.alloc(0, 3 * page);
  REQUIRE(ep->get(back, dst, 3 * page).ok());
  CHECK(m.read(back, 3 * page) == data);
  CHECK(ep->stats().bytes_delivered == 6 * page);
}

TEST_CASE("ic.coalesce: small puts to one NPU share fabric operations and cost less time") {
  auto run = [](bool coalesce, uint64_t* fabric_ops, double* modelled_ns,
                uint64_t* coalesced) {
    if (!coalesce) REQUIRE(opt::set_option("IC_COALESCE_MAX_PUT_BYTES", "0").ok());
    Machine m("n8");
    if (!coalesce) REQUIRE(opt::reset_option("IC_COALESCE_MAX_PUT_BYTES").ok());
    auto ep = m.endpoint(1);
    GlobalAddr src = m.alloc(1, 64 * 1024);
    GlobalAddr dst[3] = {m.alloc(3, 256 * 1024), m.alloc(5, 256 * 1024), m.alloc(7, 256 * 1024)};
    m.write(src, pattern(5, 64 * 1024));
    // 3 x 300 puts of 64 bytes, interleaved over the destinations, to scattered slots;
    // half from HBM, half inline.
    for (uint32_t i = 0; i < 300; ++i) {
      for (uint32_t d = 0; d < 3; ++d) {
        const uint64_t slot = (i * 37 + d) % 1000;
        if (i % 2 == 0) {
          REQUIRE(ep->put(dst[d] + slot * 256, src + (i * 64) % (64 * 1024), 64).ok());
        } else {
          auto v = pattern(1000 * d + i, 64);
          REQUIRE(ep->put_inline(dst[d] + slot * 256, v.data(), 64).ok());
        }
      }
    }
    REQUIRE(ep->quiet().ok());
    auto all = pattern(5, 64 * 1024);
    for (uint32_t i = 0; i < 300; ++i) {
      for (uint32_t d = 0; d < 3; ++d) {
        const uint64_t slot = (i * 37 + d) % 1000;
        auto got = m.read(dst[d] + slot * 256, 64);
        std::vector<uint8_t> want =
            i % 2 == 0 ? std::vector<uint8_t>(all.begin() + (i * 64) % (64 * 1024),
                                              all.begin() + (i * 64) % (64 * 1024) + 64)
                       : pattern(1000 * d + i, 64);
        REQUIRE(got == want);
      }
    }
    CHECK(ep->stats().bytes_delivered == 900 * 64);
    CHECK(ep->stats().puts == 900);
    *fabric_ops = ep->stats().fabric_ops;
    *modelled_ns = ep->now().ns;
    *coalesced = ep->stats().coalesced_puts;
  };
  uint64_t ops_on = 0, ops_off = 0, co_on = 0, co_off = 0;
  double t_on = 0, t_off = 0;
  run(true, &ops_on, &t_on, &co_on);
  run(false, &ops_off, &t_off, &co_off);
  CHECK(ops_off == 900);
  CHECK(ops_on <= 900 / 20);
  CHECK(co_on == 900);
  CHECK(co_off == 0);
  CHECK(t_on < t_off);
}

TEST_CASE("ic.coalesce: adjacent small puts merge into one plain transfer") {
  Machine m("n8");
  auto ep = m.endpoint(0);
  GlobalAddr dst = m.alloc(6, 4096);
  for (uint32_t i = 0; i < 32; ++i) {
    uint64_t v = 0x1111111111111111ull * (i % 15 + 1);
    REQUIRE(ep->put_inline(dst + 8 * i, &v, 8).ok());
  }
  REQUIRE(ep->quiet().ok());
  CHECK(ep->stats().fabric_ops == 1);
  for (uint32_t i = 0; i < 32; ++i)
    CHECK(m.read_word(dst + 8 * i) == 0x1111111111111111ull * (i % 15 + 1));
}

TEST_CASE("ic.atomics: fetch_add from many endpoints on many threads sums exactly") {
  Machine m("n16");
  GlobalAddr counter = m.alloc(9, 64);
  constexpr uint32_t kThreads = 8, kAdds = 150;
  std::vector<std::vector<uint64_t>> olds(kThreads);
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto ep = m.endpoint(t * 2);  // NPUs 0, 2, ... 14: both nodes, the owner's too
      for (uint32_t i = 0; i < kAdds; ++i) {
        uint64_t old = 0;
        if (!ep->fetch_add(counter, t + 1, &old).ok()) return;
        olds[t].push_back(old);
      }
    });
  }
  for (auto& th : threads) th.join();
  uint64_t want = 0;
  for (uint32_t t = 0; t < kThreads; ++t) want += uint64_t{t + 1} * kAdds;
  CHECK(m.read_word(counter) == want);
  // Every old value is a distinct prefix sum: no two adds saw the same value.
  std::set<uint64_t> distinct;
  size_t n = 0;
  for (const auto& v : olds) {
    n += v.size();
    distinct.insert(v.begin(), v.end());
  }
  CHECK(n == kThreads * kAdds);
  CHECK(distinct.size() == n);
}

TEST_CASE("ic.atomics: compare_swap swaps only on a match; a CAS loop counts exactly") {
  Machine m("n8");
  GlobalAddr word = m.alloc(3, 64);
  {
    auto ep = m.endpoint(0);
    uint64_t old = 99;
    REQUIRE(ep->compare_swap(word, 5, 7, &old).ok());
    CHECK(old == 0);
    CHECK(m.read_word(word) == 0);
    REQUIRE(ep->compare_swap(word, 0, 7, &old).ok());
    CHECK(old == 0);
    CHECK(m.read_word(word) == 7);
    REQUIRE(ep->fetch_add(word, ~uint64_t{6}, &old).ok());  // wraps: 7 + (2^64 - 7) = 0
    CHECK(old == 7);
    CHECK(m.read_word(word) == 0);
    CHECK(ep->now().ns > 0);  // blocking: the clock moved to the responses
  }
  constexpr uint32_t kThreads = 4, kIncrements = 100;
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto ep = m.endpoint(t + 4);
      for (uint32_t i = 0; i < kIncrements; ++i) {
        uint64_t seen = 0, old = 0;
        REQUIRE(ep->fetch_add(word, 0, &seen).ok());
        while (true) {
          REQUIRE(ep->compare_swap(word, seen, seen + 1, &old).ok());
          if (old == seen) break;
          seen = old;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(m.read_word(word) == kThreads * kIncrements);
}

TEST_CASE("ic.errors: bad input is refused with kInvalidArgument and nothing is issued") {
  Machine m("n8");
  auto ep = m.endpoint(0);
  GlobalAddr a = m.alloc(2, 4096);
  const uint64_t ops = ep->stats().fabric_ops;
  uint64_t v = 1, old = 0;
  CHECK(ep->put(GlobalAddr{0x10}, a, 64).code() == StatusCode::kInvalidArgument);
  CHECK(ep->put(a, GlobalAddr{0x10}, 64).code() == StatusCode::kInvalidArgument);
  CHECK(ep->get(a, GlobalAddr{0x10}, 64).code() == StatusCode::kInvalidArgument);
  std::vector<uint8_t> big(m.transport->caps().max_inline_bytes + 1, 1);
  Status s = ep->put_inline(a, big.data(), static_cast<uint32_t>(big.size()));
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("IC_MAX_INLINE_BYTES") != std::string::npos);
  CHECK(ep->put_inline(a, nullptr, 8).code() == StatusCode::kInvalidArgument);
  CHECK(ep->fetch_add(a + 4, 1, &old).code() == StatusCode::kInvalidArgument);
  CHECK(ep->compare_swap(GlobalAddr{0x18}, 0, 1, &old).code() == StatusCode::kInvalidArgument);
  CHECK(ep->signal(a + 1, 1, ic::SignalOp::kSet).code() == StatusCode::kInvalidArgument);
  s = ep->wait_until(a, ic::Cmp::kEq, 0, nullptr, 0);
  CHECK(s.code() == StatusCode::kInvalidArgument);  // the flag is on npu 2, not 0
  CHECK(s.message().find("npu 2") != std::string::npos);
  CHECK(ep->put_inline(a, &v, 8).ok());
  CHECK(ep->stats().fabric_ops == ops);  // the one good put is still coalesced
  REQUIRE(ep->quiet().ok());
  CHECK(ep->stats().fabric_ops == ops + 1);
  CHECK(m.read_word(a) == 1);
}

TEST_CASE("ic.timing: timing mode moves no bytes, charges the same modelled time, runs signals") {
  Machine fm("n16");
  Machine tm("n16");
  auto f = fm.endpoint(1);
  auto t = tm.endpoint(1, ic::Mode::kTiming);
  CHECK(t->mode() == ic::Mode::kTiming);
  GlobalAddr fsrc = fm.alloc(1, 1 << 20), fdst = fm.alloc(12, 1 << 20);
  GlobalAddr tsrc = tm.alloc(1, 1 << 20), tdst = tm.alloc(12, 1 << 20);
  GlobalAddr fflag = fm.alloc(12, 64), tflag = tm.alloc(12, 64);
  fm.write(fsrc, pattern(3, 1 << 20));
  tm.write(tsrc, pattern(3, 1 << 20));
  uint64_t v = 42;
  for (auto [ep, src, dst, flag] : {std::tuple{f.get(), fsrc, fdst, fflag},
                                    std::tuple{t.get(), tsrc, tdst, tflag}}) {
    REQUIRE(ep->put(dst, src, 1 << 20).ok());
    REQUIRE(ep->put_inline(dst + 100, &v, 8).ok());
    REQUIRE(ep->put_signal(dst, src, 4096, flag, 9, ic::SignalOp::kSet).ok());
    REQUIRE(ep->quiet().ok());
  }
  CHECK(t->now().ns == doctest::Approx(f->now().ns));
  CHECK(t->now().ns > 0);
  CHECK(fm.read(fdst, 1 << 20) != tm.read(tdst, 1 << 20));
  auto untouched = tm.read(tdst, 1 << 20);
  CHECK(std::all_of(untouched.begin(), untouched.end(), [](uint8_t b) { return b == 0; }));
  CHECK(tm.read_word(tflag) == 9);  // signals and atomics execute in timing mode
  CHECK(fm.read_word(fflag) == 9);
}
