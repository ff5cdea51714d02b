// MoE dispatch and combine benchmarks (interconnect/moe_dispatch.h).
//
//  ic.dispatch_ep{N}_us / ic.combine_ep{N}_us (modelled clock), N = 8, 16, 32, 64, 128, 256
//    on cm384: 128 tokens per rank, hidden 7168, top-8 of 256 routed experts (uniform
//    placement, seeded uniform routing), INT8 dispatch, BF16 combine, timing mode (the same
//    protocol with no payload). Value: modelled latency (latest rank end - common start).
//    Baseline: the busiest NPU's fabric bytes (sent or received, whichever is larger) at
//    the rated per-NPU fabric bandwidth (392 GB/s on cm384), in the same run; ratio =
//    baseline / value: the fraction of that bound reached (1 would be a perfect fluid
//    all-to-all with free synchronisation). Check: every rank received exactly the
//    (token, rank) pairs and (token, expert) rows the routing implies (counted
//    independently here), every wait's modelled time was recorded (no signal-table
//    overflow), and latency >= the bandwidth bound.
//  ic.dispatch_ep256_wall_ms (wall clock): host time of one EP 256 dispatch + combine in
//    timing mode; baseline: the same with EP 8 (ratio: how host cost grows with 32x ranks).
//  quick (--quick): EP 8, 64 and 256 only.
//  ic.dispatch_combine_384_b{1,16}_wall_us (wall) and ic.dispatch_combine_384_b{1,16}_us
//    (modelled): a decode step's dispatch + combine over all 384 NPUs of cm384 (one rank
//    each), 1 or 16 tokens in the whole step on at most 4 ranks, hidden 256, top-8 of 384
//    experts + 1 shared expert on every rank, BF16, functional mode; value: the default
//    completion (kAuto, which picks kBarrier here), median over pairs; baseline:
//    kPerSourceFlags in the same run; ratio = value / baseline. Check: combined outputs equal
//    a double-precision reference (BF16 tolerance) and latencies are positive.
//
// `moe-bench dispatch --ep N --tokens T --hidden H --topk K --quant int8|bf16 [--json]`
// runs one configuration and prints it (or one JSON object).
#include "tools/bench/bench_dispatch.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"
#include "interconnect/ic_stats.h"
#include "interconnect/moe_buffer.h"
#include "interconnect/moe_dispatch.h"
#include "interconnect/moe_dispatch_map.h"
#include "interconnect/transport.h"
#include "memory/global_memory.h"
#include "runtime/base/clock.h"
#include "runtime/base/json.h"
#include "runtime/base/options.h"
#include "runtime/base/strformat.h"
#include "tools/lib/bench/harness.h"

namespace moe::bench {
namespace {

struct DispatchBenchConfig {
  std::string preset = "cm384";
  uint32_t ep = 8;
  uint32_t tokens = 128;
  uint32_t hidden = 7168;
  uint32_t topk = 8;
  uint32_t experts = 256;
  ic::TokenFormat dispatch_format = ic::TokenFormat::kInt8;
  ic::TokenFormat combine_format = ic::TokenFormat::kBf16;
  uint32_t issue_contexts = 32;
  uint32_t rounds = 2;  // the last round is reported (the first warms nothing in the model,
                        // but its wall time includes first-touch costs)
  uint64_t seed = 2024;
};

struct DispatchBenchResult {
  bool ok = false;
  std::string error;
  double dispatch_us = 0, combine_us = 0;
  double dispatch_bound_us = 0, combine_bound_us = 0;
  double dispatch_gbps = 0, combine_gbps = 0;  // mean fabric bytes sent per rank / latency
  double dispatch_wall_ms = 0, combine_wall_ms = 0, setup_wall_ms = 0;
  uint64_t dispatch_bytes_per_rank = 0, combine_bytes_per_rank = 0;  // mean, fabric
  uint64_t slots = 0, rows = 0;
  double rated_gbps = 0;
};

// Seeded uniform routing: top-k distinct experts per token, weights in (0, 1].
void make_routing(const DispatchBenchConfig& c, uint32_t round,
                  std::vector<std::vector<int32_t>>* ids,
                  std::vector<std::vector<float>>* weights) {
  std::mt19937_64 rng(c.seed + round);
  ids->assign(c.ep, {});
  weights->assign(c.ep, {});
  for (uint32_t r = 0; r < c.ep; ++r) {
    (*ids)[r].resize(uint64_t{c.tokens} * c.topk);
    (*weights)[r].resize(uint64_t{c.tokens} * c.topk);
    for (uint32_t t = 0; t < c.tokens; ++t) {
      int32_t* row = (*ids)[r].data() + uint64_t{t} * c.topk;
      for (uint32_t k = 0; k < c.topk; ++k) {
        int32_t e;
        do {
          e = static_cast<int32_t>(rng() % c.experts);
        } while (std::find(row, row + k, e) != row + k);
        row[k] = e;
        (*weights)[r][uint64_t{t} * c.topk + k] = static_cast<float>(1 + rng() % 256) / 256.0f;
      }
    }
  }
}

DispatchBenchResult run_dispatch_bench(const DispatchBenchConfig& c) {
  DispatchBenchResult res;
  auto fail = [&](const std::string& why) {
    res.ok = false;
    res.error = why;
    return res;
  };
  if (c.ep == 0 || c.tokens == 0 || c.hidden == 0 || c.topk == 0 || c.topk > c.experts)
    return fail("ep, tokens, hidden and topk must be >= 1, topk <= experts");
  const int64_t wall0 = wall_now_ns();
  auto topo = sim::make_preset(c.preset);
  if (!topo.ok()) return fail(topo.status().to_string());
  if (c.ep > topo->num_npus())
    return fail(strformat("--ep %u: %s has %u NPUs", c.ep, c.preset.c_str(), topo->num_npus()));
  auto drv = sim::create_driver(std::move(topo).value());
  if (!drv.ok()) return fail(drv.status().to_string());
  std::unique_ptr<dev::Driver> driver = std::move(drv).value();
  res.rated_gbps = driver->topology().npu_fabric_bandwidth_gbps(0);
  mem::MemConfig mc = mem::MemConfig::from_options();
  ic::MoeBufferConfig bc;
  for (uint32_t r = 0; r < c.ep; ++r) bc.npus.push_back(r);
  bc.max_tokens_per_rank = c.tokens;
  bc.hidden = c.hidden;
  bc.max_topk = c.topk;
  bc.dispatch_format = c.dispatch_format;
  bc.combine_format = c.combine_format;
  bc.mode = ic::Mode::kTiming;
  bc.issue_contexts = c.issue_contexts;
  auto layout = ic::compute_moe_buffer_layout(bc);
  if (!layout.ok()) return fail(layout.status().to_string());
  mc.symmetric_heap_bytes = std::max<uint64_t>(mc.symmetric_heap_bytes,
                                               std::bit_ceil(layout->rank_bytes + (64ull << 20)));
  auto memory = mem::GlobalMemory::create(driver.get(), mc);
  if (!memory.ok()) return fail(memory.status().to_string());
  auto transport = ic::open_transport(*driver, **memory);
  auto buffer = transport.ok() ? ic::MoeBuffer::create(**transport, **memory, bc)
                               : StatusOr<std::unique_ptr<ic::MoeBuffer>>(transport.status());
  if (!transport.ok()) return fail(transport.status().to_string());
  if (!buffer.ok()) return fail(buffer.status().to_string());
  ic::MoeBuffer& b = **buffer;
  const ic::ExpertMap map = ic::ExpertMap::uniform(c.experts, c.ep);
  res.setup_wall_ms = double(wall_now_ns() - wall0) * 1e-6;

  const int64_t table_full_before = ic::stats_counters::kSignalTableFull.total();
  bool ok = true;
  res.dispatch_wall_ms = res.combine_wall_ms = 1e30;
  for (uint32_t round = 0; round < c.rounds; ++round) {
    std::vector<std::vector<int32_t>> ids;
    std::vector<std::vector<float>> weights;
    make_routing(c, round, &ids, &weights);
    std::vector<ic::DispatchInput> in(c.ep);
    for (uint32_t r = 0; r < c.ep; ++r) {
      in[r].num_tokens = c.tokens;
      in[r].topk_ids = ids[r];
      in[r].topk_weights = weights[r];
    }
    auto h = ic::moe_dispatch(b, map, in, c.topk);
    if (!h.ok()) return fail(h.status().to_string());
    ic::PhaseStats cs;
    Status s = ic::moe_combine(b, *h, {}, {}, &cs);
    if (!s.ok()) return fail(s.to_string());
    const ic::PhaseStats& ds = h->stats;
    // Check: the (token, rank) pairs and (token, expert) rows the routing implies.
    std::vector<uint64_t> want_slots(c.ep, 0), want_rows(c.ep, 0);
    std::vector<uint8_t> seen(c.ep);
    for (uint32_t s2 = 0; s2 < c.ep; ++s2)
      for (uint32_t t = 0; t < c.tokens; ++t) {
        std::fill(seen.begin(), seen.end(), 0);
        for (uint32_t k = 0; k < c.topk; ++k) {
          const uint32_t d = map.routed_rank(ids[s2][uint64_t{t} * c.topk + k], s2, t);
          ++want_rows[d];
          if (!seen[d]) ++want_slots[d];
          seen[d] = 1;
        }
      }
    uint64_t slots = 0, rows = 0, max_d = 0, max_c = 0, sum_d = 0, sum_c = 0;
    for (uint32_t r = 0; r < c.ep; ++r) {
      ok &= h->recv[r].num_slots == want_slots[r] && h->recv[r].num_rows() == want_rows[r];
      slots += h->recv[r].num_slots;
      rows += h->recv[r].num_rows();
      max_d = std::max({max_d, ds.fabric_bytes_sent[r], ds.fabric_bytes_received[r]});
      max_c = std::max({max_c, cs.fabric_bytes_sent[r], cs.fabric_bytes_received[r]});
      sum_d += ds.fabric_bytes_sent[r];
      sum_c += cs.fabric_bytes_sent[r];
    }
    res.slots = slots;
    res.rows = rows;
    res.dispatch_us = ds.latency_ns * 1e-3;
    res.combine_us = cs.latency_ns * 1e-3;
    res.dispatch_bound_us = double(max_d) / res.rated_gbps * 1e-3;
    res.combine_bound_us = double(max_c) / res.rated_gbps * 1e-3;
    res.dispatch_bytes_per_rank = sum_d / c.ep;
    res.combine_bytes_per_rank = sum_c / c.ep;
    res.dispatch_gbps = ds.latency_ns > 0 ? double(sum_d) / c.ep / ds.latency_ns : 0;
    res.combine_gbps = cs.latency_ns > 0 ? double(sum_c) / c.ep / cs.latency_ns : 0;
    res.dispatch_wall_ms = std::min(res.dispatch_wall_ms, double(ds.wall_ns) * 1e-6);
    res.combine_wall_ms = std::min(res.combine_wall_ms, double(cs.wall_ns) * 1e-6);
    ok &= res.dispatch_us >= res.dispatch_bound_us && res.combine_us >= res.combine_bound_us;
  }
  const int64_t overflow = ic::stats_counters::kSignalTableFull.total() - table_full_before;
  if (overflow != 0)
    return fail(strformat("%lld signal updates went unrecorded", static_cast<long long>(overflow)));
  res.ok = ok;
  if (!ok) res.error = "received counts differ from the routing, or latency under the bound";
  return res;
}

DispatchBenchConfig table_config(uint32_t ep) {
  DispatchBenchConfig c;
  c.ep = ep;
  return c;
}

void print_result(const DispatchBenchConfig& c, const DispatchBenchResult& r, bool json) {
  if (json) {
    JsonWriter w;
    w.begin_object();
    w.key("benchmark").value("dispatch");
    w.key("supernode").value(c.preset);
    w.key("ep").value(c.ep);
    w.key("tokens_per_rank").value(c.tokens);
    w.key("hidden").value(c.hidden);
    w.key("topk").value(c.topk);
    w.key("experts").value(c.experts);
    w.key("dispatch_format").value(ic::token_format_name(c.dispatch_format));
    w.key("combine_format").value(ic::token_format_name(c.combine_format));
    w.key("issue_contexts").value(c.issue_contexts);
    w.key("clock").value("modelled");
    w.key("dispatch_us").value(r.dispatch_us);
    w.key("combine_us").value(r.combine_us);
    w.key("dispatch_bound_us").value(r.dispatch_bound_us);
    w.key("combine_bound_us").value(r.combine_bound_us);
    w.key("dispatch_gbps_per_rank").value(r.dispatch_gbps);
    w.key("combine_gbps_per_rank").value(r.combine_gbps);
    w.key("dispatch_fabric_bytes_per_rank").value(r.dispatch_bytes_per_rank);
    w.key("combine_fabric_bytes_per_rank").value(r.combine_bytes_per_rank);
    w.key("rated_gbps_per_npu").value(r.rated_gbps);
    w.key("slots").value(r.slots);
    w.key("rows").value(r.rows);
    w.key("wall_dispatch_ms").value(r.dispatch_wall_ms);
    w.key("wall_combine_ms").value(r.combine_wall_ms);
    w.key("wall_setup_ms").value(r.setup_wall_ms);
    w.key("ok").value(r.ok);
    if (!r.error.empty()) w.key("error").value(r.error);
    w.end_object();
    std::printf("%s\n", w.str().c_str());
    return;
  }
  std::printf(
      "dispatch on %s: EP %u, %u tokens/rank, hidden %u, top-%u of %u experts, %s dispatch, "
      "%s combine, %u issue contexts/rank\n",
      c.preset.c_str(), c.ep, c.tokens, c.hidden, c.topk, c.experts,
      ic::token_format_name(c.dispatch_format), ic::token_format_name(c.combine_format),
      c.issue_contexts);
  if (!r.error.empty()) std::printf("  error: %s\n", r.error.c_str());
  if (r.slots == 0 && !r.ok) return;  // it did not run
  std::printf(
      "  dispatch: %9.2f us modelled (bound %.2f us at %.0f GB/s), %7.1f GB/s per rank, "
      "wall %.1f ms\n",
      r.dispatch_us, r.dispatch_bound_us, r.rated_gbps, r.dispatch_gbps, r.dispatch_wall_ms);
  std::printf("  combine:  %9.2f us modelled (bound %.2f us), %7.1f GB/s per rank, wall %.1f ms\n",
              r.combine_us, r.combine_bound_us, r.combine_gbps, r.combine_wall_ms);
  std::printf("  %llu slots, %llu expert rows; setup %.1f ms wall; check %s\n",
              static_cast<unsigned long long>(r.slots), static_cast<unsigned long long>(r.rows),
              r.setup_wall_ms, r.ok ? "passed" : "FAILED");
}

void dispatch_usage(FILE* out) {
  std::fprintf(
      out,
      "usage: moe-bench dispatch [--ep N] [--tokens T] [--hidden H] [--topk K]\n"
      "                          [--quant int8|bf16] [--combine bf16|fp32] [--experts E]\n"
      "                          [--contexts W] [--supernode NAME] [--json]\n"
      "  One MoE dispatch + combine on the simulated supernode (timing mode), printing\n"
      "  modelled latency (us) and bandwidth, and wall time. Defaults: EP 8, 128 tokens,\n"
      "  hidden 7168, top-8 of 256 experts, int8 dispatch, bf16 combine, 32 contexts, cm384.\n");
}

bool parse_u32(const char* text, uint32_t* out) {
  int64_t v = 0;
  if (!opt::parse_int(text, &v) || v <= 0 || v > 0xffffffffll) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}


// ---- Decode-sized dispatch + combine on every NPU of cm384 (functional mode) ----

struct DecodeBenchConfig {
  uint32_t ranks = 384;            // one per NPU of cm384
  uint32_t total_tokens = 1;       // in the whole step, on few ranks
  uint32_t max_tokens_per_rank = 16;
  uint32_t hidden = 256;
  uint32_t topk = 8;               // of `ranks` routed experts (one per rank)
  uint32_t pairs = 10;             // timed dispatch + combine pairs (median reported)
  uint64_t seed = 77;
  ic::DispatchCompletion completion = ic::DispatchCompletion::kAuto;
};

struct DecodeBenchResult {
  bool ok = false;
  std::string error;
  double wall_us = 0;          // median of dispatch + combine wall time, microseconds
  double min_wall_us = 0;      // the fastest pair (the host's cost with the least noise)
  double dispatch_wall_us = 0, combine_wall_us = 0;  // medians
  double dispatch_us = 0, combine_us = 0;  // modelled latency of the last pair
};

// The ranks holding tokens: `total` tokens over at most 4 ranks spread over the supernode
// (decode batches are small: most ranks have none).
std::vector<uint32_t> decode_token_counts(const DecodeBenchConfig& c) {
  std::vector<uint32_t> n(c.ranks, 0);
  const uint32_t holders = std::min<uint32_t>(4, c.total_tokens);
  for (uint32_t t = 0; t < c.total_tokens; ++t) n[(t % holders) * (c.ranks / holders) + 5] += 1;
  return n;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// f_e(x) = a_e * x, the bench's expert function (routed expert e; shared: a = 1).
float decode_expert_scale(const ic::LocalExpert& le) {
  return le.shared ? 1.0f : 0.5f + 0.125f * float(le.expert % 8);
}

DecodeBenchResult run_decode_bench(const DecodeBenchConfig& c) {
  DecodeBenchResult res;
  auto fail = [&](const std::string& why) {
    res.ok = false;
    res.error = why;
    return res;
  };
  auto topo = sim::make_preset("cm384");
  if (!topo.ok()) return fail(topo.status().to_string());
  auto drv = sim::create_driver(std::move(topo).value());
  if (!drv.ok()) return fail(drv.status().to_string());
  std::unique_ptr<dev::Driver> driver = std::move(drv).value();
  ic::MoeBufferConfig bc;
  for (uint32_t r = 0; r < c.ranks; ++r) bc.npus.push_back(r);
  bc.max_tokens_per_rank = c.max_tokens_per_rank;
  bc.hidden = c.hidden;
  bc.max_topk = c.topk;
  bc.max_shared_experts = 1;
  bc.dispatch_format = ic::TokenFormat::kBf16;
  bc.combine_format = ic::TokenFormat::kBf16;
  bc.mode = ic::Mode::kFunctional;
  bc.completion = c.completion;
  auto layout = ic::compute_moe_buffer_layout(bc);
  if (!layout.ok()) return fail(layout.status().to_string());
  mem::MemConfig mc = mem::MemConfig::from_options();
  mc.symmetric_heap_bytes = std::bit_ceil(layout->rank_bytes + (64ull << 20));
  auto memory = mem::GlobalMemory::create(driver.get(), mc);
  if (!memory.ok()) return fail(memory.status().to_string());
  auto transport = ic::open_transport(*driver, **memory);
  if (!transport.ok()) return fail(transport.status().to_string());
  auto buffer = ic::MoeBuffer::create(**transport, **memory, bc);
  if (!buffer.ok()) return fail(buffer.status().to_string());
  ic::MoeBuffer& b = **buffer;
  ic::ExpertMap map = ic::ExpertMap::uniform(c.ranks, c.ranks);
  std::vector<uint32_t> all(c.ranks);
  for (uint32_t r = 0; r < c.ranks; ++r) all[r] = r;
  if (Status s = map.add_shared_expert(all, 1.0f); !s.ok()) return fail(s.to_string());

  // Tokens and routing (seeded): top-k distinct experts, weights in (0, 1].
  const std::vector<uint32_t> counts = decode_token_counts(c);
  std::mt19937_64 rng(c.seed);
  std::vector<std::vector<uint16_t>> tokens(c.ranks);
  std::vector<std::vector<int32_t>> ids(c.ranks);
  std::vector<std::vector<float>> weights(c.ranks);
  std::vector<ic::DispatchInput> in(c.ranks);
  for (uint32_t r = 0; r < c.ranks; ++r) {
    const uint32_t n = counts[r];
    tokens[r].resize(uint64_t{n} * c.hidden);
    for (uint16_t& v : tokens[r])
      v = ic::float_to_bf16(float(int64_t(rng() % 4096) - 2048) / 1024.0f);
    ids[r].resize(uint64_t{n} * c.topk);
    weights[r].resize(uint64_t{n} * c.topk);
    for (uint32_t t = 0; t < n; ++t) {
      int32_t* row = ids[r].data() + uint64_t{t} * c.topk;
      for (uint32_t k = 0; k < c.topk; ++k) {
        int32_t e;
        do {
          e = static_cast<int32_t>(rng() % c.ranks);
        } while (std::find(row, row + k, e) != row + k);
        row[k] = e;
        weights[r][uint64_t{t} * c.topk + k] = float(1 + rng() % 256) / 256.0f;
      }
    }
    in[r] = {n, tokens[r], ids[r], weights[r]};
  }
  // The reference: out[t] = sum_k w_k a_k x_t + x_t (the shared expert, weight 1).
  std::vector<std::vector<double>> want(c.ranks);
  for (uint32_t r = 0; r < c.ranks; ++r) {
    want[r].assign(uint64_t{counts[r]} * c.hidden, 0.0);
    for (uint32_t t = 0; t < counts[r]; ++t) {
      double scale = 1.0;
      for (uint32_t k = 0; k < c.topk; ++k)
        scale += double(weights[r][uint64_t{t} * c.topk + k]) *
                 decode_expert_scale({false, uint32_t(ids[r][uint64_t{t} * c.topk + k])});
      for (uint32_t h = 0; h < c.hidden; ++h)
        want[r][uint64_t{t} * c.hidden + h] =
            scale * ic::bf16_to_float(tokens[r][uint64_t{t} * c.hidden + h]);
    }
  }

  std::vector<double> walls, dwalls, cwalls;
  std::vector<std::vector<float>> expert_out(c.ranks), out(c.ranks);
  std::vector<std::span<const float>> eo_spans(c.ranks);
  std::vector<std::span<float>> out_spans(c.ranks);
  std::vector<float> rows;
  bool ok = true;
  for (uint32_t pair = 0; pair < c.pairs + 1; ++pair) {  // pair 0 warms up (first touch)
    const int64_t t0 = wall_now_ns();
    auto h = ic::moe_dispatch(b, map, in, c.topk);
    const int64_t t1 = wall_now_ns();
    if (!h.ok()) return fail(h.status().to_string());
    // The "expert kernels" (not timed): only ranks that received rows have any.
    for (uint32_t r = 0; r < c.ranks; ++r) {
      const ic::RankReceive& rr = h->recv[r];
      expert_out[r].assign(uint64_t{rr.num_rows()} * c.hidden, 0.0f);
      for (uint32_t j = 0; j + 1 < rr.expert_offsets.size(); ++j) {
        if (rr.expert_offsets[j + 1] == rr.expert_offsets[j]) continue;
        if (Status s = ic::read_expert_rows(b, *h, r, j, &rows); !s.ok())
          return fail(s.to_string());
        const float a = decode_expert_scale(rr.experts[j]);
        float* o = expert_out[r].data() + uint64_t{rr.expert_offsets[j]} * c.hidden;
        for (size_t i = 0; i < rows.size(); ++i) o[i] = a * rows[i];
      }
      eo_spans[r] = expert_out[r];
      out[r].assign(uint64_t{counts[r]} * c.hidden, -1.0f);
      out_spans[r] = out[r];
    }
    ic::PhaseStats cs;
    const int64_t t2 = wall_now_ns();
    Status s = ic::moe_combine(b, *h, eo_spans, out_spans, &cs);
    const int64_t t3 = wall_now_ns();
    if (!s.ok()) return fail(s.to_string());
    res.dispatch_us = h->stats.latency_ns * 1e-3;
    res.combine_us = cs.latency_ns * 1e-3;
    for (uint32_t r = 0; r < c.ranks; ++r)
      for (size_t i = 0; i < out[r].size(); ++i)
        ok &= std::fabs(out[r][i] - want[r][i]) <= 0.02 * std::fabs(want[r][i]) + 1e-3;
    ok &= res.dispatch_us > 0 && res.combine_us > 0;
    if (pair == 0) continue;
    dwalls.push_back(double(t1 - t0) * 1e-3);
    cwalls.push_back(double(t3 - t2) * 1e-3);
    walls.push_back(double(t1 - t0 + t3 - t2) * 1e-3);
  }
  res.wall_us = median_of(walls);
  res.min_wall_us = walls.empty() ? 0 : *std::min_element(walls.begin(), walls.end());
  res.dispatch_wall_us = median_of(dwalls);
  res.combine_wall_us = median_of(cwalls);
  res.ok = ok;
  if (!ok) res.error = "combined outputs differ from the reference, or a latency is not positive";
  return res;
}
}  // namespace

int dispatch_command(int argc, char** argv) {
  DispatchBenchConfig c;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    auto number = [&](uint32_t* out) {
      if (v == nullptr || !parse_u32(v, out)) {
        std::fprintf(stderr, "moe-bench dispatch: %s needs a positive integer\n", arg.c_str());
        return false;
      }
      ++i;
      return true;
    };
    if (arg == "--json") {
      json = true;
    } else if (arg == "--help" || arg == "-h") {
      dispatch_usage(stdout);
      return 0;
    } else if (arg == "--ep") {
      if (!number(&c.ep)) return 2;
    } else if (arg == "--tokens") {
      if (!number(&c.tokens)) return 2;
    } else if (arg == "--hidden") {
      if (!number(&c.hidden)) return 2;
    } else if (arg == "--topk") {
      if (!number(&c.topk)) return 2;
    } else if (arg == "--experts") {
      if (!number(&c.experts)) return 2;
    } else if (arg == "--contexts") {
      if (!number(&c.issue_contexts)) return 2;
    } else if ((arg == "--quant" || arg == "--combine" || arg == "--supernode") && v != nullptr) {
      ++i;
      const std::string val = v;
      if (arg == "--supernode") {
        c.preset = val;
      } else if (arg == "--quant" && (val == "int8" || val == "bf16")) {
        c.dispatch_format = val == "int8" ? ic::TokenFormat::kInt8 : ic::TokenFormat::kBf16;
      } else if (arg == "--combine" && (val == "bf16" || val == "fp32")) {
        c.combine_format = val == "bf16" ? ic::TokenFormat::kBf16 : ic::TokenFormat::kFloat32;
      } else {
        std::fprintf(stderr, "moe-bench dispatch: %s %s: unknown value\n", arg.c_str(), v);
        dispatch_usage(stderr);
        return 2;
      }
    } else {
      std::fprintf(stderr, "moe-bench dispatch: unknown argument '%s'\n", arg.c_str());
      dispatch_usage(stderr);
      return 2;
    }
  }
  if (c.topk > c.experts) {
    std::fprintf(stderr, "moe-bench dispatch: --topk %u exceeds --experts %u\n", c.topk, c.experts);
    return 2;
  }
  const DispatchBenchResult r = run_dispatch_bench(c);
  print_result(c, r, json);
  return r.ok ? 0 : 1;
}

}  // namespace moe::bench

namespace {

MOE_BENCHMARK(ic_dispatch) {
  using namespace moe;
  std::vector<uint32_t> eps = {8, 16, 32, 64, 128, 256};
  if (ctx.quick) eps = {8, 64, 256};
  double wall_ep8 = 0, wall_ep256 = 0;
  bool ok8 = false, ok256 = false;
  for (uint32_t ep : eps) {
    const bench::DispatchBenchConfig c = bench::table_config(ep);
    const bench::DispatchBenchResult r = bench::run_dispatch_bench(c);
    if (!r.error.empty()) std::fprintf(stderr, "ic.dispatch ep %u: %s\n", ep, r.error.c_str());
    bench::Record d;
    d.name = strformat("ic.dispatch_ep%u_us", ep);
    d.value = r.dispatch_us;
    d.unit = "us";
    d.baseline = r.dispatch_bound_us;
    d.ratio = r.dispatch_us > 0 ? r.dispatch_bound_us / r.dispatch_us : 0;
    d.clock = "modelled";
    d.ok = r.ok;
    d.note = strformat(
        "128 tok x 7168 x top-8 int8, cm384; %.0f GB/s per rank; baseline: busiest "
        "NPU's bytes at %.0f GB/s; ratio: fraction of that bound",
        r.dispatch_gbps, r.rated_gbps);
    ctx.record(d);
    bench::Record cb = d;
    cb.name = strformat("ic.combine_ep%u_us", ep);
    cb.value = r.combine_us;
    cb.baseline = r.combine_bound_us;
    cb.ratio = r.combine_us > 0 ? r.combine_bound_us / r.combine_us : 0;
    cb.note =
        strformat("bf16 combine of the same; %.0f GB/s per rank; baseline and ratio as dispatch",
                  r.combine_gbps);
    ctx.record(cb);
    if (ep == 8) {
      wall_ep8 = r.dispatch_wall_ms + r.combine_wall_ms;
      ok8 = r.ok;
    }
    if (ep == 256) {
      wall_ep256 = r.dispatch_wall_ms + r.combine_wall_ms;
      ok256 = r.ok;
    }
  }
  bench::Record w;
  w.name = "ic.dispatch_ep256_wall_ms";
  w.value = wall_ep256;
  w.unit = "ms";
  w.baseline = wall_ep8;
  w.ratio = wall_ep8 > 0 ? wall_ep256 / wall_ep8 : 0;
  w.clock = "wall";
  w.ok = ok8 && ok256;
  w.note =
      "host time of one EP 256 dispatch + combine (timing mode); baseline: EP 8; ratio: "
      "growth for 32x the ranks (about 1024x the (source, destination) pairs)";
  ctx.record(w);
}

}  // namespace

namespace {

// Decode-sized steps: 1 and 16 tokens in the whole step over all 384 NPUs of cm384. Value:
// the buffer's default completion (kAuto: kBarrier here); baseline: kPerSourceFlags (every
// source flags every destination) in the same run; ratio = value / baseline.
MOE_BENCHMARK(ic_dispatch_decode_384) {
  using namespace moe;
  for (uint32_t total : {1u, 16u}) {
    bench::DecodeBenchConfig c;
    c.total_tokens = total;
    if (ctx.quick) c.pairs = 3;
    const bench::DecodeBenchResult r = bench::run_decode_bench(c);
    bench::DecodeBenchConfig f = c;
    f.completion = ic::DispatchCompletion::kPerSourceFlags;
    f.pairs = ctx.quick ? 1 : 3;  // R^2 flags: slow on the host
    const bench::DecodeBenchResult rf = bench::run_decode_bench(f);
    for (const auto* x : {&r, &rf})
      if (!x->error.empty())
        std::fprintf(stderr, "ic.dispatch_combine_384_b%u: %s\n", total, x->error.c_str());
    std::fprintf(stderr,
                 "ic.dispatch_combine_384_b%u: auto: wall dispatch %.0f us + combine %.0f us "
                 "(medians; fastest pair %.0f us), modelled dispatch %.2f us + combine %.2f us; "
                 "per-source flags: wall %.0f us + %.0f us (fastest %.0f us), modelled %.2f us + "
                 "%.2f us\n",
                 total, r.dispatch_wall_us, r.combine_wall_us, r.min_wall_us, r.dispatch_us,
                 r.combine_us, rf.dispatch_wall_us, rf.combine_wall_us, rf.min_wall_us,
                 rf.dispatch_us, rf.combine_us);
    bench::Record w;
    w.name = strformat("ic.dispatch_combine_384_b%u_wall_us", total);
    w.value = r.wall_us;
    w.unit = "us";
    w.baseline = rf.wall_us;
    w.ratio = rf.wall_us > 0 ? r.wall_us / rf.wall_us : 0;
    w.clock = "wall";
    w.ok = r.ok && rf.ok;
    w.note = strformat(
        "median host time of one dispatch + combine, cm384, 384 ranks, %u token(s) in the "
        "step, hidden 256, top-8 of 384 + 1 shared, BF16, functional; fastest pair %.0f us; "
        "baseline: per-source flags; ratio: new/old",
        total, r.min_wall_us);
    ctx.record(w);
    bench::Record m;
    m.name = strformat("ic.dispatch_combine_384_b%u_us", total);
    m.value = r.dispatch_us + r.combine_us;
    m.unit = "us";
    m.baseline = rf.dispatch_us + rf.combine_us;
    m.ratio = m.baseline > 0 ? m.value / m.baseline : 0;
    m.clock = "modelled";
    m.ok = r.ok && rf.ok;
    m.note = "modelled latency of dispatch + combine of the same; baseline: per-source flags; "
             "ratio: new/old";
    ctx.record(m);
  }
}

}  // namespace
