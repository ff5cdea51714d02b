// Serving benchmarks.
//
//  serve.tok_s: generated tokens per second of wall time when a load of many requests of
//    mixed lengths (the built-in model on n8, 2 attention DP ranks) goes through the server
//    (continuous batching, chunked prefill); baseline: the same requests one at a time
//    through generate(); ratio = batched / sequential. Result check: every request's tokens
//    equal its sequential tokens. Also printed: TTFT and TPOT percentiles on both clocks.
//  serve.tpot_p99_ms: the 99th percentile of the requests' TPOT on the modelled clock in the
//    batched run; baseline: the same percentile of the sequential run (batch 1); ratio =
//    batched / sequential (what sharing steps costs each request).
//  serve.dsv3_tok_s_per_npu_15ms: DeepSeek-V3 decode throughput per NPU (modelled) at the
//    largest batch per NPU whose TPOT holds 15 ms, found by searching simulate() (timing
//    mode; 64 NPUs in one EP group, INT8, KV length 4096, MTP 1 at 0.7 acceptance as
//    DeepSeek-V3 ships its MTP module, attention split over each NPU's two dies by heads,
//    one MoE layer simulated and the rest scaled) over
//    batches 1, 2, 4, ... then bisection; baseline: batch 1; ratio = best / batch 1. 0 when
//    even batch 1 is over 15 ms.
//  serve.dsv3_tpot_b1_ms: that configuration's TPOT at batch 1 (modelled); baseline 15 ms;
//    ratio TPOT / target: how far the floor is from the target.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "models/engine/generate.h"
#include "models/serving/decode_at_target.h"
#include "models/serving/server.h"
#include "models/simulate.h"
#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"
#include "runtime/runtime.h"
#include "tools/lib/bench/harness.h"

namespace moe {
namespace {

const models::ModelWeights& builtin_weights() {
  static const models::ModelWeights w =
      models::ModelWeights::random(models::model_config("builtin").value(), 7).value();
  return w;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * double(v.size() - 1) + 0.5));
  return v[i];
}

MOE_BENCHMARK(serve_throughput) {
  const uint32_t num_requests = ctx.quick ? 12 : 32, new_tokens = ctx.quick ? 8 : 24;
  rt::RuntimeOptions ro;
  ro.supernode = "n8";
  ro.host.synthetic = "pack:1 numa:1 core:2";
  auto runtime = rt::Runtime::open(ro);
  models::EngineOptions eo;
  // 2 attention DP ranks: many sequences share each home's step (the host runs every
  // home's kernels one after another, so batching pays inside a home).
  eo.attention_dp = 2;
  eo.max_tokens_per_rank = 64;
  eo.kv_blocks_per_rank = 256;
  auto engine = runtime.ok() ? models::Engine::create(*runtime.value(), builtin_weights(), eo)
                             : StatusOr<std::unique_ptr<models::Engine>>(runtime.status());
  if (!engine.ok()) {
    std::fprintf(stderr, "bench: %s\n", engine.status().to_string().c_str());
    ctx.record({"serve.tok_s", 0, "tokens/s", 0, 0, "wall", false, engine.status().to_string()});
    return;
  }
  models::Engine& e = *engine.value();
  const uint32_t V = e.config().vocab_size;
  std::vector<models::GenerateRequest> reqs;
  for (uint32_t i = 0; i < num_requests; ++i) {
    models::GenerateRequest r;
    const uint32_t len = 8 + (i * 29) % 57;
    for (uint32_t j = 0; j < len; ++j) r.prompt.push_back((i * 31 + j * 7) % V);
    r.max_new_tokens = new_tokens / 2 + (i * 11) % (new_tokens / 2 + 1);
    r.sampling.temperature = i % 2 ? 0.7f : 0.0f;
    r.sampling.seed = i;
    reqs.push_back(std::move(r));
  }

  // Baseline: one request at a time.
  std::vector<std::vector<uint32_t>> alone;
  std::vector<double> seq_tpot_ms;
  uint64_t generated = 0;
  const int64_t s0 = wall_now_ns();
  bool ok = true;
  for (const models::GenerateRequest& r : reqs) {
    models::GenerateStats gs;
    auto out = models::generate(e, std::span(&r, 1), &gs);
    if (!out.ok()) {
      std::fprintf(stderr, "bench: %s\n", out.status().to_string().c_str());
      ok = false;
      break;
    }
    alone.push_back(out.value()[0]);
    generated += out.value()[0].size();
    if (gs.decode_steps > 0) seq_tpot_ms.push_back(gs.decode_modelled_ns / gs.decode_steps / 1e6);
  }
  const double seq_s = double(wall_now_ns() - s0) / 1e9;

  // Batched: everything submitted at once.
  auto server = models::serving::Server::create(e);
  std::vector<models::serving::RequestId> ids;
  const int64_t b0 = wall_now_ns();
  for (const models::GenerateRequest& r : reqs) {
    models::serving::Request q;
    q.prompt = r.prompt;
    q.max_new_tokens = r.max_new_tokens;
    q.sampling = r.sampling;
    auto id = server.value()->submit(std::move(q));
    if (!id.ok()) { ok = false; break; }
    ids.push_back(id.value());
  }
  Status run = server.value()->run_until_idle();
  const double batch_s = double(wall_now_ns() - b0) / 1e9;
  ok = ok && run.ok() && ids.size() == reqs.size();
  std::vector<double> ttft_w, ttft_m, tpot_w, tpot_m;
  for (size_t i = 0; ok && i < ids.size(); ++i) {
    ok = ok && server.value()->tokens(ids[i]).value() == alone[i];
    const auto m = server.value()->metrics(ids[i]).value();
    ttft_w.push_back(m.ttft_wall_ns / 1e6);
    ttft_m.push_back(m.ttft_modelled_ns / 1e6);
    if (m.generated_tokens > 1) {
      tpot_w.push_back(m.tpot_wall_ns / 1e6);
      tpot_m.push_back(m.tpot_modelled_ns / 1e6);
    }
  }
  const auto st = server.value()->stats();
  const double tok_s = generated / batch_s, seq_tok_s = generated / seq_s;
  std::printf("  serve: %u requests, %llu tokens: batched %.3f s (%llu steps, max %u decoding per "
              "DP rank), sequential %.3f s; tokens %s\n",
              num_requests, static_cast<unsigned long long>(generated), batch_s,
              static_cast<unsigned long long>(st.steps), st.max_decode_batch, seq_s,
              ok ? "equal" : "DIFFER");
  std::printf("  serve: %.1f%% of the server's step wall time outside Engine::forward (scheduling, "
              "sampling, callbacks)\n",
              st.wall_ns > 0 ? 100.0 * double(st.wall_ns - st.engine_wall_ns) / double(st.wall_ns) : 0.0);
  std::printf("  serve: TTFT p50/p99 %.2f/%.2f ms wall, %.3f/%.3f ms modelled; TPOT p50/p99 "
              "%.2f/%.2f ms wall, %.3f/%.3f ms modelled (sequential TPOT p99 %.3f ms modelled)\n",
              percentile(ttft_w, 0.5), percentile(ttft_w, 0.99), percentile(ttft_m, 0.5),
              percentile(ttft_m, 0.99), percentile(tpot_w, 0.5), percentile(tpot_w, 0.99),
              percentile(tpot_m, 0.5), percentile(tpot_m, 0.99), percentile(seq_tpot_ms, 0.99));
  ctx.record({"serve.tok_s", tok_s, "tokens/s", seq_tok_s, seq_tok_s > 0 ? tok_s / seq_tok_s : 0,
              "wall", ok,
              "built-in model on n8 (2 DP ranks), many requests through the server; baseline the "
              "same requests one at a time through generate(); ratio batched / sequential"});
  const double p99 = percentile(tpot_m, 0.99), base99 = percentile(seq_tpot_ms, 0.99);
  ctx.record({"serve.tpot_p99_ms", p99, "ms", base99, base99 > 0 ? p99 / base99 : 0, "modelled",
              ok && p99 > 0 && p99 <= st.tpot_target_ns / 1e6,
              "p99 TPOT of the batched run (modelled); baseline the sequential run's; ratio "
              "batched / sequential; check: within the 15 ms target"});
}

// DeepSeek-V3 decode on n64 (one EP group of 64), INT8, KV 4096, MTP 1 at 0.7, one MoE layer
// simulated, attention placed as `attention_split` says.
models::SimulateOptions dsv3_decode_options(uint32_t attention_split) {
  models::SimulateOptions o;
  o.supernode = "n64";
  o.phase = models::Phase::kDecode;
  o.kv_len = 4096;
  o.mtp = 1;
  o.mtp_accept = 0.7;
  o.moe_layers = 1;
  o.attention_split = attention_split;
  return o;
}

MOE_BENCHMARK(serve_dsv3_15ms) {
  const double target_ms = 15.0;
  const auto config = models::model_config("deepseek-v3").value();
  const uint32_t max_batch = ctx.quick ? 64 : 256;
  // The search with attention split over the dies (the placement that holds the target);
  // batch 1 with attention data-parallel over the dies for comparison.
  auto found = models::serving::decode_at_target(config, dsv3_decode_options(2), target_ms * 1e6,
                                                 max_batch, /*bisect=*/!ctx.quick);
  auto dp_b1 = models::simulate(config, [] {
    models::SimulateOptions o = dsv3_decode_options(1);
    o.batch_per_npu = 1;
    return o;
  }());
  if (!found.ok() || !dp_b1.ok()) {
    const Status& why = !found.ok() ? found.status() : dp_b1.status();
    ctx.record({"serve.dsv3_tok_s_per_npu_15ms", 0, "tokens/s", 0, 0, "modelled", false,
                why.to_string()});
    return;
  }
  const models::serving::DecodeAtTarget& f = found.value();
  const double batch1_tok_s = f.batch1.tokens_per_s_per_npu;
  const double best_tok_s = f.batch > 0 ? f.at_batch.tokens_per_s_per_npu : 0;
  const bool ok = f.batch1.tpot_ns > 0 && (f.batch == 0 || best_tok_s > 0);
  const double tpot1 = f.batch1.tpot_ns / 1e6;
  std::printf("  serve.dsv3: attention split over the dies: batch 1 TPOT %.2f ms (%.1f tokens/s "
              "per NPU); %s (%u simulations); attention data-parallel over the dies: batch 1 "
              "TPOT %.2f ms\n",
              tpot1, batch1_tok_s,
              f.batch > 0 ? strformat("largest batch within 15 ms: %u per NPU, TPOT %.2f ms, %.1f "
                                      "tokens/s per NPU", f.batch, f.at_batch.tpot_ns / 1e6,
                                      best_tok_s).c_str()
                          : "no batch holds 15 ms TPOT in this configuration",
              f.evaluations, dp_b1->tpot_ns / 1e6);
  ctx.record({"serve.dsv3_tpot_b1_ms", tpot1, "ms", target_ms, tpot1 / target_ms, "modelled", ok,
              strformat("DeepSeek-V3 decode TPOT at batch 1 per NPU (same configuration; "
                        "attention data-parallel over the dies instead: %.2f ms); baseline the "
                        "15 ms target; ratio TPOT / target (over 1: no batch holds the target)",
                        dp_b1->tpot_ns / 1e6)});
  ctx.record({"serve.dsv3_tok_s_per_npu_15ms", best_tok_s, "tokens/s", batch1_tok_s,
              batch1_tok_s > 0 ? best_tok_s / batch1_tok_s : 0, "modelled", ok,
              "DeepSeek-V3 decode (simulate: n64, EP 64, INT8, KV 4096, MTP 1 @ 0.7, attention "
              "split over the dies by heads) at the largest batch per NPU with TPOT <= 15 ms; "
              "baseline batch 1; 0 when batch 1 is already over 15 ms"});
}

}  // namespace
}  // namespace moe
