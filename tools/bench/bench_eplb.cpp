// Expert re-placement benchmarks: the built-in model over all 384 NPUs of cm384.
//
//  moe.eplb_replace_wall_ms: wall time of Engine::apply_expert_maps (global policy, one spare
//    slot per NPU: 384 redundant replicas per MoE layer) for the load observed over a 32-token
//    prefill and a few decode steps of 16 sequences, reached in 12 transition stages, one per
//    step boundary (eplb::transition_stages; the longest of those pauses): how long serving pauses. Baseline: the
//    median wall time of one decode step of the same engine; ratio = pause / step (target:
//    under 1, "no pause longer than one step"). Result check: the greedy tokens of the steps
//    after the re-placement equal those of an engine that never re-placed.
//  moe.eplb_imbalance: max/mean expected tokens per NPU after the re-placement (the observed
//    load under the new maps, worst MoE layer); baseline: the same under the initial
//    contiguous layout; ratio after / before. Computed from counts (clock "modelled").
//  moe.eplb_replace_modelled_us: modelled duration of the weight transfers (fabric copies).
//    Baseline: one decode step's modelled time.
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <vector>

#include "models/engine/engine.h"
#include "models/eplb/imbalance.h"
#include "models/eplb/placement_policy.h"
#include "runtime/runtime.h"
#include "tools/bench/greedy_decode.h"
#include "tools/lib/bench/harness.h"

namespace moe {
namespace {

struct Run {
  std::vector<uint32_t> tokens;      // step-major greedy tokens after the re-placement point
  std::vector<int64_t> step_wall_ns;
  std::vector<double> step_modelled_ns;
  models::PlacementChangeStats change;  // the longest of the staged re-placements
  uint32_t copied = 0;
  uint64_t fabric_bytes = 0;
  double imbalance_before = 0, imbalance_after = 0;
  bool ok = false;
};

const models::ModelWeights& weights() {
  static const models::ModelWeights w =
      models::ModelWeights::random(models::model_config("builtin").value(), 7).value();
  return w;
}

constexpr uint32_t kStages = 12;

// 1 prefill + `before` decode steps, optionally a re-placement, then `after` decode steps.
Run serve(bool replace, int before, int after) {
  Run run;
  rt::RuntimeOptions ro;
  ro.supernode = "cm384";
  ro.host.synthetic = "pack:1 numa:1 core:2";
  auto runtime = rt::Runtime::open(ro);
  if (!runtime.ok()) {
    std::fprintf(stderr, "bench: %s\n", runtime.status().to_string().c_str());
    return run;
  }
  std::vector<dev::NpuId> npus(384);
  std::iota(npus.begin(), npus.end(), 0);
  models::EngineOptions eo;
  eo.npus = npus;
  eo.attention_dp = 16;
  auto engine = models::Engine::create(*runtime.value(), weights(), eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "bench: %s\n", engine.status().to_string().c_str());
    return run;
  }
  models::Engine& e = *engine.value();
  const models::ModelConfig& c = e.config();
  const uint32_t V = c.vocab_size, batch = 16;
  std::vector<models::SeqId> seqs;
  for (uint32_t b = 0; b < batch; ++b) seqs.push_back(e.open_sequence().value());
  const std::vector<std::vector<uint32_t>> prompts = bench::synthetic_prompts(batch, 32, V);
  std::vector<uint32_t> next(batch);
  std::vector<float> logits;
  std::vector<std::vector<ic::ExpertMap>> staged;  // [stage][moe layer]
  for (int step = 0; step <= before + after; ++step) {
    // The new maps are computed once from the load so far, then reached in kStages
    // transition stages (eplb::transition_stages), one per step boundary.
    if (replace && step == before + 1) {
      std::vector<ic::ExpertMap> current;
      std::vector<std::vector<double>> loads;
      for (uint32_t m = 0; m < c.num_moe_layers(); ++m) {
        current.push_back(e.expert_map(m));
        loads.emplace_back(e.expert_load()[m].begin(), e.expert_load()[m].end());
      }
      const auto shape = models::eplb::placement_shape(runtime.value()->topology(), npus,
                                                       c.num_experts, c.num_groups, 384);
      auto maps = models::eplb::rebalance(loads, shape, models::eplb::Policy::kGlobal, current);
      if (!maps.ok()) {
        std::fprintf(stderr, "bench: %s\n", maps.status().to_string().c_str());
        return run;
      }
      for (uint32_t m = 0; m < c.num_moe_layers(); ++m) {
        run.imbalance_before = std::max(run.imbalance_before, models::eplb::imbalance(loads[m], current[m]));
        run.imbalance_after = std::max(run.imbalance_after, models::eplb::imbalance(loads[m], maps.value()[m]));
      }
      staged.assign(kStages, current);
      for (uint32_t m = 0; m < c.num_moe_layers(); ++m) {
        auto t = models::eplb::transition_stages(current[m], maps.value()[m], kStages);
        if (!t.ok()) {
          std::fprintf(stderr, "bench: %s\n", t.status().to_string().c_str());
          return run;
        }
        for (uint32_t k = 0; k < kStages; ++k) staged[k][m] = t.value()[std::min<size_t>(k, t.value().size() - 1)];
      }
    }
    if (replace && step > before && step <= before + int(kStages)) {
      models::PlacementChangeStats change;
      const Status s = e.apply_expert_maps(staged[step - before - 1], &change);
      if (!s.ok()) {
        std::fprintf(stderr, "bench: %s\n", s.to_string().c_str());
        return run;
      }
      if (change.wall_ns > run.change.wall_ns) run.change = change;  // the longest pause
      run.copied += change.moves.replicas_copied;
      run.fabric_bytes += change.moves.fabric_bytes;
    }
    models::StepStats st;
    const Status s = bench::greedy_step(e, seqs, prompts, step == 0, next, logits, &st);
    if (!s.ok()) {
      std::fprintf(stderr, "bench: step %d: %s\n", step, s.to_string().c_str());
      return run;
    }
    if (step > before) run.tokens.insert(run.tokens.end(), next.begin(), next.end());
    if (step > 0) {
      run.step_wall_ns.push_back(st.wall_ns);
      run.step_modelled_ns.push_back(st.modelled_ns);
    }
  }
  run.ok = true;
  return run;
}

template <typename T>
double median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : double(v[v.size() / 2]);
}

MOE_BENCHMARK(moe_eplb_replace) {
  const int before = 3, after = int(kStages) + (ctx.quick ? 2 : 8);
  const Run with = serve(true, before, after);
  const Run without = serve(false, before, after);
  const bool ok = with.ok && without.ok && with.tokens == without.tokens &&
                  with.imbalance_after < with.imbalance_before;
  const double pause_ms = double(with.change.wall_ns) / 1e6;
  const double step_ms = median(with.step_wall_ns) / 1e6;
  const double step_modelled_us = median(with.step_modelled_ns) / 1e3;
  const double copy_us = with.change.moves.modelled_ns / 1e3;
  const auto& mv = with.change.moves;
  std::printf("  moe.eplb_replace_wall_ms: longest stage pause %.2f ms (simulated copies %.2f, "
              "working copies %.2f, runtime %.2f) vs decode step %.2f ms; in all %u replicas copied, "
              "%.1f MiB over the fabric; longest stage %.1f us modelled; imbalance %.3f -> %.3f; "
              "tokens %s\n",
              pause_ms, double(mv.copy_wall_ns) / 1e6, double(mv.working_copy_wall_ns) / 1e6,
              double(with.change.wall_ns - mv.copy_wall_ns - mv.working_copy_wall_ns) / 1e6, step_ms,
              with.copied, double(with.fabric_bytes) / (1 << 20), copy_us, with.imbalance_before,
              with.imbalance_after, ok ? "equal" : "DIFFER");
  ctx.record({"moe.eplb_replace_wall_ms", pause_ms, "ms", step_ms, step_ms > 0 ? pause_ms / step_ms : 0,
              "wall", ok,
              "built-in model on 384 NPUs: longest apply_expert_maps pause of a re-placement in 12 "
              "stages (global policy, 384 redundant replicas per layer); baseline one decode step (batch "
              "16); target ratio < 1"});
  ctx.record({"moe.eplb_imbalance", with.imbalance_after, "max/mean", with.imbalance_before,
              with.imbalance_before > 0 ? with.imbalance_after / with.imbalance_before : 0,
              "modelled", ok,
              "expected max/mean tokens per NPU for the observed load (worst MoE layer) after "
              "re-placement; baseline the initial contiguous layout"});
  ctx.record({"moe.eplb_replace_modelled_us", copy_us, "us", step_modelled_us,
              step_modelled_us > 0 ? copy_us / step_modelled_us : 0, "modelled", ok,
              "modelled fabric time of the longest re-placement stage's weight copies; "
              "baseline one decode step's modelled time"});
}

}  // namespace
}  // namespace moe
