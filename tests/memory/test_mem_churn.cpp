// Serving-shaped churn: KV-cache blocks of one size owned by sequences that start, grow and
// finish at random, plus per-step activations of mixed sizes, for many steps. Fragmentation
// must stay bounded: the HBM the NPU actually holds (resident frames) stays within a stated
// factor of the bytes asked for and live, and committed HBM stays within a factor of the
// peak of live bytes, over the whole run, not just at the end.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "memory/size_classes.h"
#include "tests/memory/mem_test_util.h"

using namespace moe;
using namespace moe::mem;
using namespace moe::mem::testing;

namespace {
struct Block {
  GlobalAddr addr;
  uint64_t bytes;
};
struct Sequence {
  uint32_t tokens = 0;
  uint32_t target = 0;
  std::vector<Block> kv;
};
}  // namespace

TEST_CASE("mem.churn: KV blocks and mixed activations for many steps keep fragmentation bounded") {
  // The bound, checked every 10 steps once the NPU holds real load:
  //   resident <= kFactor x live + (size classes used + large blocks + 4) x page
  //   committed <= kFactor x peak live + (size classes used + 8) x page + one segment
  // The fixed part is what does not scale with load: each size class in use pins at least
  // one slab page (and its thread cache may hold blocks of it), and a large block may leave
  // the unused parts of its first and last page (one page, over both ends, on average) to
  // neighbours that never come.
  constexpr double kFactor = 1.25;
  constexpr uint64_t kKvBlock = 64 << 10;  // 16 tokens x 4 KiB per token
  constexpr uint32_t kTokensPerBlock = 16;

  auto drv = make_driver("n8", uint64_t{1} << 30);
  const MemConfig cfg = small_config();
  auto mem = make_memory(drv.get(), cfg);
  const SizeClasses classes(cfg.slab_max_bytes, cfg.page_bytes);
  const uint64_t page = mem->page_bytes();
  const dev::NpuId npu = 4;
  std::mt19937_64 rng(31337);
  std::vector<Sequence> active;
  std::vector<std::vector<Block>> activations(3);  // live for 1 to 3 steps
  std::set<uint32_t> classes_used;
  std::map<uint32_t, uint32_t> live_per_class;
  uint64_t live = 0, peak_live = 0, large_live = 0, steps_checked = 0;
  double worst_excess = 0;  // max of (resident - fixed part) / live
  auto alloc = [&](uint64_t bytes) {
    auto a = mem->allocate_local(npu, bytes);
    REQUIRE_MESSAGE(a.ok(), a.status().to_string());
    live += bytes;
    peak_live = std::max(peak_live, live);
    if (bytes <= classes.max_bytes()) {
      classes_used.insert(classes.index_of(bytes));
      ++live_per_class[classes.index_of(bytes)];
    } else {
      ++large_live;
    }
    return Block{a.value(), bytes};
  };
  auto release = [&](const Block& b) {
    REQUIRE(mem->free(b.addr).ok());
    live -= b.bytes;
    if (b.bytes <= classes.max_bytes()) {
      if (--live_per_class[classes.index_of(b.bytes)] == 0) live_per_class.erase(classes.index_of(b.bytes));
    } else {
      --large_live;
    }
  };

  const int kSteps = 400;
  for (int step = 0; step < kSteps; ++step) {
    // Arrivals: load swings between busy and quiet phases.
    const double phase = 0.5 + 0.5 * std::sin(step / 40.0);
    const uint32_t arrivals = static_cast<uint32_t>(rng() % (1 + static_cast<uint32_t>(6 * phase)));
    for (uint32_t i = 0; i < arrivals && active.size() < 96; ++i) {
      Sequence s;
      s.target = 32 + rng() % 1500;
      s.tokens = static_cast<uint32_t>(rng() % 256);  // prefill
      for (uint32_t t = 0; t < s.tokens; t += kTokensPerBlock) s.kv.push_back(alloc(kKvBlock));
      active.push_back(std::move(s));
    }
    // Decode: every sequence grows by a token; a finished one frees all its blocks.
    for (size_t i = 0; i < active.size();) {
      Sequence& s = active[i];
      if (s.tokens % kTokensPerBlock == 0) s.kv.push_back(alloc(kKvBlock));
      ++s.tokens;
      if (s.tokens >= s.target || rng() % 200 == 0) {
        for (const Block& b : s.kv) release(b);
        active[i] = std::move(active.back());
        active.pop_back();
      } else {
        ++i;
      }
    }
    // Activations: mixed sizes, 1 KiB to 24 MiB, log-uniform; each lives 1 to 3 steps.
    for (const Block& b : activations[0]) release(b);
    activations[0] = std::move(activations[1]);
    activations[1] = std::move(activations[2]);
    activations[2].clear();
    const uint32_t n = 4 + rng() % 8;
    for (uint32_t i = 0; i < n; ++i) {
      const double lg = 10 + (rng() % 10000) / 10000.0 * 14.6;  // 2^10 .. 2^24.6
      const uint64_t bytes = static_cast<uint64_t>(std::pow(2.0, lg));
      activations[rng() % 3].push_back(alloc(bytes));
    }

    if (step % 10 == 9 && live > (64u << 20)) {
      const NpuMemStats s = mem->npu_stats(npu);
      ++steps_checked;
      const uint64_t fixed = (classes_used.size() + large_live + 4) * page;
      worst_excess = std::max(worst_excess, (double(s.resident_bytes) - double(fixed)) / double(live));
      CAPTURE(step);
      CAPTURE(live);
      CAPTURE(fixed);
      CHECK(double(s.resident_bytes) <= kFactor * double(live) + double(fixed));
      CHECK(double(s.committed_bytes) <=
            kFactor * double(peak_live) + double((classes_used.size() + 8) * page + cfg.segment_bytes));
      CHECK(s.in_use_bytes >= live);  // rounding only adds
      CHECK(double(s.in_use_bytes) <= 1.25 * double(live) + double(64 << 10) * double(large_live));
    }
  }
  MESSAGE("peak live " << (peak_live >> 20) << " MiB; worst (resident - fixed) / live " << worst_excess
                       << " over " << steps_checked << " checks; " << classes_used.size()
                       << " size classes used; committed at the end "
                       << (mem->npu_stats(npu).committed_bytes >> 20) << " MiB");
  CHECK(steps_checked >= 10);
  for (auto& s : active)
    for (const Block& b : s.kv) release(b);
  for (auto& v : activations)
    for (const Block& b : v) release(b);
  mem->flush_thread_cache();
  const NpuMemStats end = mem->npu_stats(npu);
  CHECK(end.in_use_bytes == 0);
  CHECK(end.large_blocks == 0);
  CHECK(end.large_mapped_pages == 0);
  // What stays is the empty slab each class keeps; a segment stays committed only while one
  // of those pins it, plus the one retained empty segment.
  CHECK(end.resident_bytes == end.slab_pages * page);
  CHECK(end.slab_pages <= classes_used.size());
  CHECK(end.committed_bytes <= (end.slab_pages + 1) * cfg.segment_bytes);
}
