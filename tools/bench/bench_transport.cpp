// Benchmarks of the memory-semantic transport (make bench; moe-bench --filter ic).
//
//  ic.put64_rate: 64-byte put_inline operations per second of wall time, issued by one
//    endpoint to scattered slots on four destination NPUs (coalesced per destination), then
//    quiet. Baseline: 64-byte memcpy into the same pattern of host slots, in the same run
//    (ratio = puts / memcpys per second). Check: every slot holds its put's bytes and the
//    endpoint counted exactly the bytes asked as delivered.
//  ic.put64_modelled_rate: the same puts per second of *modelled* time (puts / the
//    endpoint's clock after quiet); baseline: the same puts with coalescing off (ratio: the
//    speed-up coalescing gives the modelled machine).
//  ic.put1m_vs_memcpy: bandwidth of 1 MiB puts between two NPUs (wall clock), as a fraction
//    of memcpy bandwidth between two host buffers of the same sizes in the same run; target
//    at least 0.8. Check: the destination equals the source and delivered == asked.
// Each figure is the best of a few rounds, alternating with its baseline, so that both see
// the same machine load.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"
#include "interconnect/transport.h"
#include "memory/global_memory.h"
#include "runtime/base/clock.h"
#include "runtime/base/options.h"
#include "runtime/base/strformat.h"
#include "tools/lib/bench/harness.h"
#include "tools/lib/bench/sim_machine.h"

namespace {

using namespace moe;
using mem::GlobalAddr;

struct Machine : bench::SimMachine {
  std::unique_ptr<ic::Endpoint> endpoint(dev::NpuId npu) {
    ic::EndpointConfig c;
    c.npu = npu;
    auto ep = transport->open_endpoint(c);
    return ep.ok() ? std::move(ep).value() : nullptr;
  }
};

// The value of the i-th 64-byte put: 8 words that name it.
void fill_put(uint64_t i, uint64_t* words) {
  for (uint64_t w = 0; w < 8; ++w) words[w] = i * 8 + w + 0x5DEECE66Dull;
}

constexpr uint32_t kDestinations = 4;
constexpr uint64_t kSlotStride = 192;  // scattered: a gap after every slot

struct Put64Run {
  double wall_s = 0;
  double modelled_ns = 0;
  bool ok = false;
};

// `n` puts of 64 bytes from NPU 0 to slots on NPUs 1..4, then quiet.
Put64Run put64_run(uint64_t n, uint32_t rounds) {
  Put64Run best;
  best.wall_s = 1e30;
  Machine m;
  if (!m.open("n8")) return best;
  auto ep = m.endpoint(0);
  if (!ep) return best;
  const uint64_t slots_per_dst = n / kDestinations + 1;
  std::vector<GlobalAddr> dst(kDestinations);
  for (uint32_t d = 0; d < kDestinations; ++d) {
    auto a = m.memory->allocate_local(d + 1, slots_per_dst * kSlotStride);
    if (!a.ok()) return best;
    dst[d] = a.value();
  }
  bool ok = true;
  for (uint32_t r = 0; r < rounds; ++r) {
    const uint64_t delivered_before = ep->stats().bytes_delivered;
    const double clock_before = ep->now().ns;
    uint64_t words[8];
    const int64_t t0 = wall_now_ns();
    for (uint64_t i = 0; i < n; ++i) {
      fill_put(i + r, words);
      const uint32_t d = static_cast<uint32_t>(i % kDestinations);
      ok &= ep->put_inline(dst[d] + (i / kDestinations) * kSlotStride, words, 64).ok();
    }
    ok &= ep->quiet().ok();
    const double s = static_cast<double>(wall_now_ns() - t0) * 1e-9;
    best.wall_s = std::min(best.wall_s, s);
    best.modelled_ns = ep->now().ns - clock_before;
    ok &= ep->stats().bytes_delivered - delivered_before == n * 64;
    // Every slot holds its put's words.
    std::vector<uint8_t> got(kSlotStride);
    for (uint64_t i = 0; i < n && ok; i += 1 + n / 4096) {
      fill_put(i + r, words);
      const uint32_t d = static_cast<uint32_t>(i % kDestinations);
      ok &= m.memory->read(dst[d] + (i / kDestinations) * kSlotStride, got.data(), 64).ok();
      ok &= std::memcmp(got.data(), words, 64) == 0;
    }
  }
  best.ok = ok;
  return best;
}

// The same pattern of 64-byte copies into host memory.
double memcpy64_seconds(uint64_t n, uint32_t rounds) {
  const uint64_t slots_per_dst = n / kDestinations + 1;
  std::vector<std::vector<uint8_t>> dst(kDestinations,
                                        std::vector<uint8_t>(slots_per_dst * kSlotStride, 1));
  double best = 1e30;
  uint64_t words[8];
  for (uint32_t r = 0; r < rounds; ++r) {
    const int64_t t0 = wall_now_ns();
    for (uint64_t i = 0; i < n; ++i) {
      fill_put(i + r, words);
      const uint32_t d = static_cast<uint32_t>(i % kDestinations);
      std::memcpy(dst[d].data() + (i / kDestinations) * kSlotStride, words, 64);
      bench::do_not_optimize(dst[d][0]);
    }
    best = std::min(best, static_cast<double>(wall_now_ns() - t0) * 1e-9);
  }
  for (auto& v : dst) bench::do_not_optimize(v[kSlotStride]);
  return best;
}

MOE_BENCHMARK(ic_put64) {
  const uint64_t n = ctx.quick ? 20000 : 400000;
  const uint32_t rounds = ctx.quick ? 2 : 5;
  Put64Run on = put64_run(n, rounds);
  const double memcpy_s = memcpy64_seconds(n, rounds);
  bool ok = on.ok;
  if (!opt::set_option("IC_COALESCE_MAX_PUT_BYTES", "0").ok()) ok = false;
  // Coalescing off only changes the modelled figure; fewer puts keep the run short.
  Put64Run off = put64_run(n / 10, 1);
  if (!opt::reset_option("IC_COALESCE_MAX_PUT_BYTES").ok()) ok = false;
  ok = ok && off.ok;

  const double rate = static_cast<double>(n) / on.wall_s;
  const double base = static_cast<double>(n) / memcpy_s;
  ctx.record({"ic.put64_rate", rate, "ops/s", base, rate / base, "wall", ok,
              strformat("64 B put_inline to 4 NPUs, coalesced; baseline: 64 B host memcpy "
                        "(%llu puts)",
                        static_cast<unsigned long long>(n))});
  const double modelled = static_cast<double>(n) / (on.modelled_ns * 1e-9);
  const double modelled_off = static_cast<double>(n / 10) / (off.modelled_ns * 1e-9);
  ctx.record({"ic.put64_modelled_rate", modelled, "ops/s", modelled_off, modelled / modelled_off,
              "modelled", ok,
              "same puts per modelled second; baseline: coalescing off (ratio = speed-up)"});
}

MOE_BENCHMARK(ic_put1m) {
  const uint64_t kBytes = 1 << 20;
  const uint32_t kBuffers = 8;  // rotated, so neither side runs from one cached buffer
  const uint32_t puts = ctx.quick ? 32 : 256;
  const uint32_t rounds = ctx.quick ? 2 : 5;
  Machine m;
  bool ok = m.open("n8");
  std::unique_ptr<ic::Endpoint> ep = ok ? m.endpoint(0) : nullptr;
  ok = ok && ep != nullptr;
  std::vector<GlobalAddr> src(kBuffers), dst(kBuffers);
  std::vector<std::vector<uint8_t>> hsrc(kBuffers, std::vector<uint8_t>(kBytes)),
      hdst(kBuffers, std::vector<uint8_t>(kBytes));
  for (uint32_t b = 0; b < kBuffers && ok; ++b) {
    auto s = m.memory->allocate_local(0, kBytes);
    auto d = m.memory->allocate_local(1, kBytes);
    ok = s.ok() && d.ok();
    if (!ok) break;
    src[b] = s.value();
    dst[b] = d.value();
    for (uint64_t i = 0; i < kBytes; ++i) hsrc[b][i] = static_cast<uint8_t>(i * 131 + b * 7);
    ok = m.memory->write(src[b], hsrc[b].data(), kBytes).ok() &&
         m.memory->write(dst[b], hdst[b].data(), kBytes).ok();  // touch every page once
  }
  double put_s = 1e30, copy_s = 1e30;
  uint64_t delivered = 0, asked = 0;
  for (uint32_t r = 0; r < rounds && ok; ++r) {
    const uint64_t before = ep->stats().bytes_delivered;
    int64_t t0 = wall_now_ns();
    for (uint32_t i = 0; i < puts; ++i)
      ok &= ep->put(dst[i % kBuffers], src[(i + r) % kBuffers], kBytes).ok();
    ok &= ep->quiet().ok();
    put_s = std::min(put_s, static_cast<double>(wall_now_ns() - t0) * 1e-9);
    delivered += ep->stats().bytes_delivered - before;
    asked += uint64_t{puts} * kBytes;
    t0 = wall_now_ns();
    for (uint32_t i = 0; i < puts; ++i) {
      std::memcpy(hdst[i % kBuffers].data(), hsrc[(i + r) % kBuffers].data(), kBytes);
      bench::do_not_optimize(hdst[i % kBuffers][i]);
    }
    copy_s = std::min(copy_s, static_cast<double>(wall_now_ns() - t0) * 1e-9);
  }
  // Check: the last put into each destination buffer came from the expected source.
  std::vector<uint8_t> got(kBytes);
  const uint32_t last_round = rounds - 1;
  for (uint32_t b = 0; b < kBuffers && ok; ++b) {
    uint32_t last = 0;
    for (uint32_t i = 0; i < puts; ++i)
      if (i % kBuffers == b) last = i;
    ok = m.memory->read(dst[b], got.data(), kBytes).ok() &&
         got == hsrc[(last + last_round) % kBuffers];
  }
  ok = ok && delivered == asked;
  const double total = static_cast<double>(puts) * kBytes;
  const double put_gbps = total / put_s * 1e-9, copy_gbps = total / copy_s * 1e-9;
  ctx.record({"ic.put1m_vs_memcpy", put_gbps, "GB/s", copy_gbps, put_gbps / copy_gbps, "wall", ok,
              "1 MiB puts NPU 0 -> NPU 1 vs host memcpy of 1 MiB; target ratio >= 0.8"});
}

}  // namespace
