// run_generate_job: the engine end to end from the command line.
#include "tools/moe/generate_job.h"

#include <cstdio>

#include "models/engine/generate.h"
#include "runtime/base/json.h"
#include "runtime/base/strformat.h"
#include "runtime/runtime.h"

namespace moe::tools {

int run_generate_job(const GenerateJob& job) {
  auto fail = [](const char* what, const Status& s) {
    std::fprintf(stderr, "moe: %s: %s\n", what, s.to_string().c_str());
    return 1;
  };
  auto config = models::model_config(job.model);
  if (!config.ok()) return fail("model", config.status());
  auto weights = job.weights_path.empty() ? models::ModelWeights::random(*config, job.weights_seed)
                                          : models::ModelWeights::load(*config, job.weights_path);
  if (!weights.ok()) return fail("weights", weights.status());

  rt::RuntimeOptions ro;
  ro.supernode = job.supernode;
  auto runtime = rt::Runtime::open(ro);
  if (!runtime.ok()) return fail("supernode", runtime.status());
  models::EngineOptions eo;
  const uint32_t total = runtime.value()->num_devices();
  if (job.npus > total) {
    std::fprintf(stderr, "moe: --npus %u: the supernode has %u NPUs\n", job.npus, total);
    return 1;
  }
  for (uint32_t n = 0; n < (job.npus == 0 ? total : job.npus); ++n) eo.npus.push_back(n);
  eo.attention_dp = std::min<uint32_t>(job.attention_dp, static_cast<uint32_t>(eo.npus.size()));
  if (job.int8) {
    eo.precision = models::ExpertPrecision::kInt8;
    eo.dispatch_format = ic::TokenFormat::kInt8;
  }
  uint64_t last_pct = 0;
  eo.progress = [&](uint64_t done, uint64_t all) {
    const uint64_t pct = all ? done * 100 / all : 100;
    if (!job.json && pct >= last_pct + 25) {
      std::fprintf(stderr, "  placing weights: %llu%%\n", static_cast<unsigned long long>(pct));
      last_pct = pct;
    }
  };
  const int64_t t0 = wall_now_ns();
  auto engine = models::Engine::create(*runtime.value(), *weights, eo);
  if (!engine.ok()) return fail("engine", engine.status());
  const int64_t load_ns = wall_now_ns() - t0;
  models::Engine& e = *engine.value();

  std::vector<models::GenerateRequest> requests;
  for (const std::string& p : job.prompts) {
    models::GenerateRequest r;
    r.prompt = models::bytes_to_tokens(p);
    r.max_new_tokens = job.max_new_tokens;
    r.sampling = {job.temperature, job.top_p, job.seed + requests.size()};
    requests.push_back(std::move(r));
  }
  if (!job.json)
    std::printf("\nengine: %s on %u NPUs (%u attention DP ranks, %s experts), weights %s, placed "
                "in %.0f ms wall\n",
                config->name.c_str(), e.num_ranks(), e.num_dp_ranks(), job.int8 ? "W8A8" : "BF16",
                job.weights_path.empty() ? strformat("seeded %llu", (unsigned long long)job.weights_seed).c_str()
                                         : job.weights_path.c_str(),
                load_ns / 1e6);
  models::GenerateStats st;
  auto out = models::generate(e, requests, &st);
  if (!out.ok()) return fail("generate", out.status());
  const double tpot_ms = st.decode_steps ? st.decode_modelled_ns / st.decode_steps / 1e6 : 0;
  const double wall_per_step = st.steps ? st.wall_ns / 1e6 / st.steps : 0;
  if (job.json) {
    JsonWriter w;
    w.begin_object();
    w.key("model").value(config->name);
    w.key("npus").value(e.num_ranks());
    w.key("attention_dp").value(e.num_dp_ranks());
    w.key("outputs").begin_array();
    for (size_t i = 0; i < out->size(); ++i) {
      w.begin_object();
      w.key("prompt").value(job.prompts[i]);
      w.key("text").value(models::tokens_to_text((*out)[i]));
      w.key("tokens").begin_array();
      for (uint32_t t : (*out)[i]) w.value(t);
      w.end_array();
      w.end_object();
    }
    w.end_array();
    w.key("steps").value(st.steps);
    w.key("generated_tokens").value(st.generated_tokens);
    w.key("wall_ms").value(st.wall_ns / 1e6);
    w.key("modelled_ms").value(st.modelled_ns / 1e6);
    w.key("modelled_tpot_ms").value(tpot_ms);
    w.end_object();
    std::printf("%s\n", w.str().c_str());
    return 0;
  }
  for (size_t i = 0; i < out->size(); ++i)
    std::printf("  [%zu] \"%s\" -> \"%s\"\n", i, job.prompts[i].c_str(),
                models::tokens_to_text((*out)[i]).c_str());
  std::printf("  %u steps (%u with prompt tokens), %llu tokens generated; wall %.1f ms (%.2f ms "
              "per step: %.0f%% kernel math, %.0f%% dispatch/combine, %.0f%% host runtime); "
              "modelled %.3f ms (decode step %.3f ms)\n",
              st.steps, st.prefill_steps, static_cast<unsigned long long>(st.generated_tokens),
              st.wall_ns / 1e6, wall_per_step, 100.0 * st.math_wall_ns / std::max<int64_t>(1, st.wall_ns),
              100.0 * st.comm_wall_ns / std::max<int64_t>(1, st.wall_ns),
              100.0 * (st.wall_ns - st.math_wall_ns - st.comm_wall_ns) / std::max<int64_t>(1, st.wall_ns),
              st.modelled_ns / 1e6, tpot_ms);
  if (job.weights_path.empty() && config->name == "builtin")
    std::printf("  (random weights: the text is noise; --weights loads a trained checkpoint)\n");
  return 0;
}

}  // namespace moe::tools
