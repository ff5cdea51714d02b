// Engine benchmarks: one decode step of the built-in model over all 384 NPUs of cm384.
//
//  moe.decode_b1_wall_ms / moe.decode_b16_wall_ms: wall time of one decode step at batch 1 and
//    16 (16 attention DP ranks spread over the supernode, one sequence each, KV length ~32),
//    median of the timed steps; baseline: the same steps of the same model on ONE NPU of the
//    n8 preset (every expert local, dispatch and combine stay on the NPU), ratio = 384 / 1.
//    Target: under 15 ms at batch 1. Result check: both runs produce the same greedy tokens.
//  moe.decode_host_share: the share of the batch-1 step's wall time that is host runtime
//    overhead: wall minus the time inside kernel bodies (the math) and inside dispatch and
//    combine (the device's communication, emulated on the host here; on the appliance the
//    NPUs run it). Target: under 5%. Baseline: the math's share; ratio = host / math.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "models/engine/engine.h"
#include "runtime/runtime.h"
#include "tools/bench/greedy_decode.h"
#include "tools/lib/bench/harness.h"

namespace moe {
namespace {

struct DecodeRun {
  std::vector<models::StepStats> steps;  // timed steps
  std::vector<uint32_t> tokens;          // every sequence's greedy tokens, step-major
  bool ok = false;
};

DecodeRun decode(const char* supernode, std::vector<dev::NpuId> npus, uint32_t dp, uint32_t batch,
                 int warmup, int timed, const models::ModelWeights& weights) {
  DecodeRun run;
  rt::RuntimeOptions ro;
  ro.supernode = supernode;
  ro.host.synthetic = "pack:1 numa:1 core:2";
  auto runtime = rt::Runtime::open(ro);
  if (!runtime.ok()) {
    std::fprintf(stderr, "bench: %s\n", runtime.status().to_string().c_str());
    return run;
  }
  models::EngineOptions eo;
  eo.npus = std::move(npus);
  eo.attention_dp = dp;
  eo.max_tokens_per_rank = std::max<uint32_t>(64, (batch + dp - 1) / dp * 32);  // the prompts in one step
  auto engine = models::Engine::create(*runtime.value(), weights, eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "bench: %s\n", engine.status().to_string().c_str());
    return run;
  }
  models::Engine& e = *engine.value();
  const uint32_t V = e.config().vocab_size;
  std::vector<models::SeqId> seqs;
  for (uint32_t b = 0; b < batch; ++b) seqs.push_back(e.open_sequence().value());
  const std::vector<std::vector<uint32_t>> prompts = bench::synthetic_prompts(batch, 32, V);
  std::vector<uint32_t> next(batch);
  std::vector<float> logits;
  for (int step = 0; step <= warmup + timed; ++step) {
    models::StepStats st;
    const Status s = bench::greedy_step(e, seqs, prompts, step == 0, next, logits, &st);
    if (!s.ok()) {
      std::fprintf(stderr, "bench: step %d: %s\n", step, s.to_string().c_str());
      return run;
    }
    run.tokens.insert(run.tokens.end(), next.begin(), next.end());
    if (step > warmup) run.steps.push_back(st);
  }
  run.ok = true;
  return run;
}

double median_ms(const std::vector<models::StepStats>& steps, int64_t models::StepStats::*field) {
  std::vector<double> v;
  for (const auto& s : steps) v.push_back(double(s.*field) / 1e6);
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

const models::ModelWeights& builtin_weights() {
  static const models::ModelWeights w =
      models::ModelWeights::random(models::model_config("builtin").value(), 7).value();
  return w;
}

void bench_decode(bench::Context& ctx, uint32_t batch, const char* name, bool record_share) {
  const int warmup = 2, timed = ctx.quick ? 3 : 15;
  std::vector<dev::NpuId> all;
  for (dev::NpuId n = 0; n < 384; ++n) all.push_back(n);
  const DecodeRun big = decode("cm384", all, 16, batch, warmup, timed, builtin_weights());
  const DecodeRun one = decode("n8", {0}, 1, batch, warmup, timed, builtin_weights());
  const bool ok = big.ok && one.ok && big.tokens == one.tokens;
  const double wall = median_ms(big.steps, &models::StepStats::wall_ns);
  const double base = median_ms(one.steps, &models::StepStats::wall_ns);
  double modelled = 0;
  for (const auto& s : big.steps) modelled += s.modelled_ns / 1e3;
  if (!big.steps.empty()) modelled /= big.steps.size();
  std::printf("  %s: 384 NPUs %.2f ms wall per step (modelled %.1f us), 1 NPU %.2f ms; tokens %s\n",
              name, wall, modelled, base, ok ? "equal" : "DIFFER");
  ctx.record({name, wall, "ms", base, base > 0 ? wall / base : 0, "wall", ok,
              "one decode step of the built-in model on all 384 NPUs (16 attention DP ranks); "
              "baseline the same steps on 1 NPU; target < 15 ms at batch 1"});
  if (!record_share) return;
  // Host share: per step (wall - math - communication) / wall, median over the timed steps.
  std::vector<double> share, math;
  for (const auto& s : big.steps) {
    share.push_back(double(s.host_wall_ns()) / double(s.wall_ns));
    math.push_back(double(s.math_wall_ns) / double(s.wall_ns));
  }
  std::sort(share.begin(), share.end());
  std::sort(math.begin(), math.end());
  const double host = share.empty() ? 1 : share[share.size() / 2];
  const double m = math.empty() ? 0 : math[math.size() / 2];
  std::printf("  moe.decode_host_share: host %.1f%%, math %.1f%%, communication %.1f%% of the step\n",
              100 * host, 100 * m, 100 * (1 - host - m));
  ctx.record({"moe.decode_host_share", host, "fraction", m, m > 0 ? host / m : 0, "wall", ok,
              "batch-1 decode step on 384 NPUs: host runtime share of wall time (wall - kernel "
              "bodies - dispatch/combine); baseline the math share; target < 0.05"});
}

MOE_BENCHMARK(moe_decode_b1) { bench_decode(ctx, 1, "moe.decode_b1_wall_ms", true); }
MOE_BENCHMARK(moe_decode_b16) { bench_decode(ctx, 16, "moe.decode_b16_wall_ms", false); }

}  // namespace
}  // namespace moe
