// Ordering and completion rules of transport.h: put_signal never exposes the flag before the
// data (in wall time, to a reader on another thread, and in modelled time), fence orders puts
// to one NPU without moving the clock, quiet completes everything and moves it, wait_until is
// satisfied from other threads or times out, barriers hold every member until all arrived.
#include <doctest/doctest.h>

#include "interconnect/ic_options.h"

#include <atomic>
#include <thread>

#include "interconnect/transport.h"
#include "tests/interconnect/transport_test_util.h"

using namespace ictest;
using moe::StatusCode;

TEST_CASE("ic.signal: put_signal never exposes the flag before the data (reader thread)") {
  Machine m("n16");
  constexpr uint32_t kRounds = 40;
  constexpr uint64_t kBlock = 24 * 1024;  // 48 packets: striped over every plane
  GlobalAddr src = m.alloc(3, kRounds * kBlock);
  GlobalAddr dst = m.alloc(12, kRounds * kBlock);
  GlobalAddr small = m.alloc(12, kRounds * 64 * 8);
  GlobalAddr flag = m.alloc(12, 64);
  for (uint32_t r = 0; r < kRounds; ++r) m.write(src + r * kBlock, pattern(r + 1, kBlock));
  std::atomic<uint32_t> bad{0}, checked{0};
  std::thread reader([&] {
    auto ep = m.endpoint(12);
    for (uint32_t r = 1; r <= kRounds; ++r) {
      uint64_t seen = 0;
      if (!ep->wait_until(flag, ic::Cmp::kGe, r, &seen).ok()) {
        bad += 1000;
        return;
      }
      // Everything up to round `seen` must be complete when the flag says so.
      for (uint32_t k = r; k <= seen; ++k) {
        if (m.read(dst + (k - 1) * kBlock, kBlock) != pattern(k, kBlock)) ++bad;
        auto s = m.read(small + (k - 1) * 512, 512);
        for (uint32_t i = 0; i < 8; ++i)
          if (s[i * 64] != static_cast<uint8_t>(k + i)) ++bad;
        ++checked;
      }
      r = static_cast<uint32_t>(seen);
    }
  });
  auto ep = m.endpoint(3);
  for (uint32_t r = 1; r <= kRounds; ++r) {
    // Coalesced small puts to the signal's NPU, then data and flag in one put_signal.
    for (uint32_t i = 0; i < 8; ++i) {
      uint8_t v[64];
      std::memset(v, static_cast<int>(r + i), sizeof(v));
      REQUIRE(ep->put_inline(small + (r - 1) * 512 + i * 64, v, 64).ok());
    }
    REQUIRE(ep->put_signal(dst + (r - 1) * kBlock, src + (r - 1) * kBlock, kBlock, flag, r,
                           ic::SignalOp::kSet)
                .ok());
  }
  REQUIRE(ep->quiet().ok());
  reader.join();
  CHECK(bad == 0);
  CHECK(checked == kRounds);
  CHECK(ep->stats().signals == kRounds);
}

TEST_CASE("ic.signal: the waiter's clock moves to when the flag became visible, after the data") {
  // The data's arrival time on its own (a fresh, identical machine).
  double data_ns = 0;
  {
    Machine m("n16");
    auto ep = m.endpoint(0);
    GlobalAddr src = m.alloc(0, 1 << 20), dst = m.alloc(9, 1 << 20);
    REQUIRE(ep->put(dst, src, 1 << 20).ok());
    REQUIRE(ep->quiet().ok());
    data_ns = ep->now().ns;
  }
  Machine m("n16");
  auto sender = m.endpoint(0);
  auto waiter = m.endpoint(9);
  GlobalAddr src = m.alloc(0, 1 << 20), dst = m.alloc(9, 1 << 20), flag = m.alloc(9, 64);
  REQUIRE(sender->put_signal(dst, src, 1 << 20, flag, 1, ic::SignalOp::kAdd).ok());
  // Non-blocking in modelled time: the clock moves only by one issue cost.
  CHECK(sender->now().ns == doctest::Approx(ic::options::kDeviceIssueNs.get()));
  REQUIRE(waiter->wait_until(flag, ic::Cmp::kGe, 1).ok());
  const double seen_ns = waiter->now().ns;
  CHECK(seen_ns > data_ns);  // the flag became visible after the last data byte
  REQUIRE(sender->quiet().ok());
  CHECK(sender->now().ns >= seen_ns);  // the signal's response comes back later still
  // A waiter already further in time keeps its own clock.
  auto late = m.endpoint(9);
  late->advance_to(ModelTime{seen_ns + 1e6});
  REQUIRE(late->wait_until(flag, ic::Cmp::kEq, 1).ok());
  CHECK(late->now().ns == seen_ns + 1e6);
}

TEST_CASE("ic.signal: a counter pushed past the threshold reports when it first crossed it") {
  Machine m("n8");
  auto a = m.endpoint(0);
  auto w = m.endpoint(5);
  GlobalAddr counter = m.alloc(5, 64);
  REQUIRE(a->signal(counter, 1, ic::SignalOp::kAdd).ok());
  a->advance_to(ModelTime{50'000});
  REQUIRE(a->signal(counter, 1, ic::SignalOp::kAdd).ok());
  a->advance_to(ModelTime{90'000});
  REQUIRE(a->signal(counter, 1, ic::SignalOp::kAdd).ok());
  // The waiter for >= 2 runs after all three updates (wall time) but must see the second's
  // modelled time, not the third's.
  REQUIRE(w->wait_until(counter, ic::Cmp::kGe, 2).ok());
  CHECK(w->now().ns > 50'000);
  CHECK(w->now().ns < 90'000);
  // A flag set, reset by a signal, and set again: the latest set counts.
  GlobalAddr f = m.alloc(5, 64);
  REQUIRE(a->signal(f, 1, ic::SignalOp::kSet).ok());
  a->advance_to(ModelTime{200'000});
  REQUIRE(w->signal(f, 0, ic::SignalOp::kSet).ok());
  REQUIRE(a->signal(f, 1, ic::SignalOp::kSet).ok());
  REQUIRE(w->wait_until(f, ic::Cmp::kEq, 1).ok());
  CHECK(w->now().ns > 200'000);
}

TEST_CASE("ic.fence: orders puts to one NPU in modelled time without moving the clock") {
  auto run = [](bool fence, double* quiet_ns, double* big_ns, uint64_t* word) {
    Machine m("n8");
    auto ep = m.endpoint(2);
    GlobalAddr src = m.alloc(2, 1 << 20), dst = m.alloc(6, 1 << 20);
    m.write(src, std::vector<uint8_t>(1 << 20, 0xAB));
    REQUIRE(ep->put(dst, src, 1 << 20).ok());
    if (fence) {
      REQUIRE(ep->fence().ok());
      CHECK(ep->now().ns == doctest::Approx(ic::options::kDeviceIssueNs.get()));  // the put's issue only
    }
    uint64_t v = 0x5555;
    REQUIRE(ep->put_inline(dst, &v, 8).ok());  // overwrites the first word of the big put
    REQUIRE(ep->quiet().ok());
    *quiet_ns = ep->now().ns;
    *word = m.read_word(dst);
    // The big put alone, for reference.
    Machine r("n8");
    auto e2 = r.endpoint(2);
    GlobalAddr s2 = r.alloc(2, 1 << 20), d2 = r.alloc(6, 1 << 20);
    REQUIRE(e2->put(d2, s2, 1 << 20).ok());
    REQUIRE(e2->quiet().ok());
    *big_ns = e2->now().ns;
  };
  double with = 0, without = 0, big = 0;
  uint64_t w1 = 0, w2 = 0;
  run(true, &with, &big, &w1);
  run(false, &without, &big, &w2);
  // Without the fence the small put overtakes the big one in the model: quiet ends with the
  // big put. With it, the small put leaves only after the big one arrived.
  CHECK(without == doctest::Approx(big));
  CHECK(with > big + 100);
  // Functionally, the later put lands last either way (in issue order per destination).
  CHECK(w1 == 0x5555);
  CHECK(w2 == 0x5555);
}

TEST_CASE("ic.quiet: non-blocking puts leave the clock; quiet completes and advances it") {
  Machine m("n16");
  auto dev_ep = m.endpoint(1);
  auto host_ep = m.endpoint(1, ic::Mode::kFunctional, ic::Issuer::kHost);
  GlobalAddr src = m.alloc(1, 4 << 20), dst = m.alloc(10, 4 << 20), got = m.alloc(1, 4 << 20);
  m.write(src, pattern(8, 4 << 20));
  for (uint32_t i = 0; i < 4; ++i)
    REQUIRE(dev_ep->put(dst + i * (1 << 20), src + i * (1 << 20), 1 << 20).ok());
  const double issue_ns = ic::options::kDeviceIssueNs.get();
  CHECK(dev_ep->now().ns == doctest::Approx(4 * issue_ns));  // issue costs only, no waiting
  REQUIRE(dev_ep->get_nbi(got, src, 4096).ok());
  CHECK(dev_ep->now().ns == doctest::Approx(5 * issue_ns));
  REQUIRE(dev_ep->quiet().ok());
  // 4 MiB over 7 x 56 GB/s takes over 10 us.
  CHECK(dev_ep->now().ns > 4.0 * (1 << 20) / 392.0);
  CHECK(m.read(dst, 4 << 20) == pattern(8, 4 << 20));
  auto first = pattern(8, 4096);
  CHECK(m.read(got, 4096) == first);
  // quiet with nothing outstanding does not move the clock.
  const double t = dev_ep->now().ns;
  REQUIRE(dev_ep->quiet().ok());
  CHECK(dev_ep->now().ns == t);
  // A host endpoint pays its issue cost per operation.
  uint64_t v = 1;
  REQUIRE(host_ep->put_inline(dst, &v, 8).ok());
  REQUIRE(host_ep->put_inline(dst + 8, &v, 8).ok());
  CHECK(host_ep->now().ns > 0);
  const double before = host_ep->now().ns;
  REQUIRE(host_ep->quiet().ok());
  CHECK(host_ep->now().ns > before);
}

TEST_CASE("ic.wait_until: satisfied by another thread's put, or kTimeout in bounded time") {
  Machine m("n8");
  GlobalAddr flag = m.alloc(4, 64);
  GlobalAddr src = m.alloc(0, 64);
  uint64_t seven = 7;
  REQUIRE(m.memory->write(src, &seven, 8).ok());
  auto waiter = m.endpoint(4);
  std::thread writer([&] {
    auto ep = m.endpoint(0);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(ep->put(flag, src, 8).ok());  // a plain put: no signal record
    REQUIRE(ep->quiet().ok());
  });
  uint64_t seen = 0;
  REQUIRE(waiter->wait_until(flag, ic::Cmp::kEq, 7, &seen, 10'000'000'000).ok());
  writer.join();
  CHECK(seen == 7);
  CHECK(waiter->now().ns == 0);  // words written by plain puts carry no time
  CHECK(waiter->stats().waits == 1);
  // Every comparison.
  CHECK(waiter->wait_until(flag, ic::Cmp::kNe, 6, nullptr, 0).ok());
  CHECK(waiter->wait_until(flag, ic::Cmp::kGt, 6, nullptr, 0).ok());
  CHECK(waiter->wait_until(flag, ic::Cmp::kLt, 8, nullptr, 0).ok());
  CHECK(waiter->wait_until(flag, ic::Cmp::kLe, 7, nullptr, 0).ok());
  // Never satisfied: a timeout, not a hang.
  Status s = waiter->wait_until(flag, ic::Cmp::kGt, 7, nullptr, 20'000'000);
  CHECK(s.code() == StatusCode::kTimeout);
  CHECK(s.message().find("last value 7") != std::string::npos);
  auto short_ep = m.endpoint(4, ic::Mode::kFunctional, ic::Issuer::kDevice, 10'000'000);
  CHECK(short_ep->wait_until(flag, ic::Cmp::kEq, 8).code() == StatusCode::kTimeout);
}

TEST_CASE("ic.barrier: nobody leaves before everyone arrived; clocks meet at the latest") {
  Machine m("n16");
  std::vector<dev::NpuId> members;
  for (dev::NpuId n = 0; n < 16; n += 2) members.push_back(n);
  auto group = m.transport->create_group(members);
  REQUIRE(group.ok());
  CHECK((*group)->rank_of(4) == 2);
  CHECK((*group)->rank_of(5) == -1);
  constexpr uint32_t kRounds = 15;
  std::atomic<uint32_t> arrived{0}, early{0};
  std::vector<double> clocks(members.size());
  std::vector<std::thread> threads;
  for (uint32_t r = 0; r < members.size(); ++r) {
    threads.emplace_back([&, r] {
      auto ep = m.endpoint(members[r]);
      for (uint32_t round = 0; round < kRounds; ++round) {
        if (r == 3 && round == 7) ep->advance_to(ModelTime{ep->now().ns + 1e6});
        arrived.fetch_add(1);
        if (!ep->barrier(**group).ok()) {
          early += 1000;
          return;
        }
        if (arrived.load() < (round + 1) * members.size()) ++early;
        if (round == 7) clocks[r] = ep->now().ns;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(early == 0);
  for (double c : clocks) CHECK(c > 1e6);  // member 3's late arrival held everyone

  // Split phase from one thread: arrive all, then wait all (in reverse order).
  std::vector<std::unique_ptr<Endpoint>> eps;
  for (dev::NpuId n : members) eps.push_back(m.endpoint(n));
  for (uint32_t round = 0; round < 3; ++round) {
    for (auto& ep : eps) REQUIRE(ep->barrier_arrive(**group).ok());
    for (size_t i = eps.size(); i-- > 0;) REQUIRE(eps[i]->barrier_wait(**group).ok());
  }
  // A member that waits without arriving, or arrives twice, is told so.
  CHECK(eps[0]->barrier_wait(**group).code() == StatusCode::kFailedPrecondition);
  REQUIRE(eps[0]->barrier_arrive(**group).ok());
  CHECK(eps[0]->barrier_arrive(**group).code() == StatusCode::kFailedPrecondition);
  // The others never come: a timeout, not a hang.
  CHECK(eps[0]->barrier_wait(**group, 10'000'000).code() == StatusCode::kTimeout);
  auto outsider = m.endpoint(1);
  CHECK(outsider->barrier(**group).code() == StatusCode::kInvalidArgument);
}

namespace {
struct KernelCtx {
  Endpoint* ep = nullptr;
  GlobalAddr dst, src, flag;
  uint64_t bytes = 0;
  Status status;
};
void kernel_body(void* p) {
  auto* c = static_cast<KernelCtx*>(p);
  c->status = c->ep->put_signal(c->dst, c->src, c->bytes, c->flag, 1, ic::SignalOp::kAdd);
  if (c->status.ok()) c->status = c->ep->quiet();
}
}  // namespace

TEST_CASE("ic.device: a kernel body on an NPU issues through that NPU's endpoint") {
  Machine m("n8");
  auto ep = m.endpoint(2);
  GlobalAddr src = m.alloc(2, 64 * 1024), dst = m.alloc(5, 64 * 1024), flag = m.alloc(5, 64);
  m.write(src, pattern(31, 64 * 1024));
  KernelCtx ctx;
  ctx.ep = ep.get();
  ctx.dst = dst;
  ctx.src = src;
  ctx.flag = flag;
  ctx.bytes = 64 * 1024;
  dev::QueueId q;
  REQUIRE(m.driver->queue_create(2, 0, dev::EngineKind::kCompute, 0, &q).ok());
  dev::WorkDescriptor w;
  w.kind = dev::WorkKind::kKernel;
  w.kernel.hbm_bytes = 1 << 20;
  w.kernel.body = kernel_body;
  w.kernel.ctx = &ctx;
  REQUIRE(m.driver->queue_submit(q, &w, 1).ok());
  REQUIRE(m.driver->doorbell_ring(q).ok());
  dev::Completion c;
  size_t n = 0;
  REQUIRE(m.driver->completions_poll(q, &c, 1, &n).ok());
  REQUIRE(n == 1);
  REQUIRE(c.status == StatusCode::kOk);
  REQUIRE_MESSAGE(ctx.status.ok(), ctx.status.to_string());
  CHECK(m.read(dst, 64 * 1024) == pattern(31, 64 * 1024));
  CHECK(m.read_word(flag) == 1);
  REQUIRE(m.driver->queue_destroy(q).ok());
}
