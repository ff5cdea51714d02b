// `moe run`: the main job, as `make run` starts it.
//
// Starts the appliance daemon (moed, next to this binary) on the simulated supernode, and
// through the client API (moe::Client): loads the built-in model on every NPU, streams one
// generation as it is produced, serves a burst of concurrent clients, and prints TTFT and
// TPOT on both clocks and the experts' load balance from the daemon's metrics. Then the
// timing-mode summary of DeepSeek-V3 decode at the 15 ms TPOT target (models/simulate.h,
// in this process), and a draining shutdown of the daemon. Every figure names its clock.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "models/serving/decode_at_target.h"
#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"
#include "tools/lib/client/client.h"
#include "tools/lib/daemon/metrics_text.h"
#include "tools/moe/commands.h"
#include "tools/moe/daemon_process.h"

namespace moe::tools {
namespace {

struct RunOptions {
  std::string supernode = "cm384";
  uint64_t seed = 1;
  std::string prompt = "The supernode";
  uint32_t max_new_tokens = 32;
  uint32_t clients = 16;
  std::string eplb_interval = "32";  // moed's --eplb-interval
  bool dsv3 = true;
};

void run_usage(FILE* out) {
  std::fprintf(out,
               "usage: moe run [--supernode NAME|FILE] [--seed N] [--prompt TEXT] [--tokens N]\n"
               "               [--clients N] [--eplb-interval N] [--no-dsv3]\n"
               "  The main job: starts moed on the simulated supernode, loads the built-in model\n"
               "  on every NPU, streams a generation through the client API, serves N clients at\n"
               "  once, prints TTFT/TPOT (wall and modelled clocks) and the expert load balance,\n"
               "  then DeepSeek-V3 decode at a 15 ms TPOT target (timing mode), and stops moed.\n"
               "  --supernode  a preset (cm384 (default), n8, n16, n64) or a description file\n"
               "  --seed       the simulator's seed (default 1)\n"
               "  --prompt     what the model continues (default \"The supernode\")\n"
               "  --tokens     tokens per generation (default 32)\n"
               "  --clients    concurrent clients in the burst (default 16; 0 skips it)\n"
               "  --eplb-interval  moed re-places experts every N steps when it pays (default 32; 0: never)\n"
               "  --no-dsv3    skip the DeepSeek-V3 timing summary\n");
}

// Parses the arguments; returns 0 to go on, else the exit status (after printing why).
int parse(int argc, char** argv, RunOptions* o) {
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "moe run: %s needs a value\n", arg.c_str());
        return nullptr;
      }
      return argv[++i];
    };
    auto number = [&](uint64_t max, uint64_t* out) {
      const char* v = value();
      if (!v) return false;
      char* end = nullptr;
      unsigned long long parsed = std::strtoull(v, &end, 10);
      if (end == v || *end != '\0' || v[0] == '-' || parsed > max) {
        std::fprintf(stderr, "moe run: %s expects a number up to %llu, got '%s'\n", arg.c_str(),
                     static_cast<unsigned long long>(max), v);
        return false;
      }
      *out = parsed;
      return true;
    };
    uint64_t n = 0;
    if (arg == "--help" || arg == "-h") {
      run_usage(stdout);
      return -1;
    } else if (arg == "--supernode") {
      const char* v = value();
      if (!v) return 2;
      o->supernode = v;
    } else if (arg == "--prompt") {
      const char* v = value();
      if (!v) return 2;
      if (*v == '\0') {
        std::fprintf(stderr, "moe run: --prompt must not be empty\n");
        return 2;
      }
      o->prompt = v;
    } else if (arg == "--seed") {
      if (!number(~0ull, &o->seed)) return 2;
    } else if (arg == "--tokens") {
      if (!number(512, &n) || n == 0) {
        if (n == 0) std::fprintf(stderr, "moe run: --tokens must be in [1, 512]\n");
        return 2;
      }
      o->max_new_tokens = static_cast<uint32_t>(n);
    } else if (arg == "--clients") {
      if (!number(64, &n)) return 2;
      o->clients = static_cast<uint32_t>(n);
    } else if (arg == "--eplb-interval") {
      if (!number(1u << 30, &n)) return 2;
      o->eplb_interval = std::to_string(n);
    } else if (arg == "--no-dsv3") {
      o->dsv3 = false;
    } else {
      std::fprintf(stderr, "moe run: unknown argument '%s'\n", arg.c_str());
      run_usage(stderr);
      return 2;
    }
  }
  return 0;
}

int fail(const char* what, const Status& status) {
  std::fprintf(stderr, "moe run: %s: %s\n", what, status.to_string().c_str());
  return 1;
}

void print_supernode(const proto::StatusReply& status) {
  if (!status.topology) return;
  const proto::TopologySummary& t = *status.topology;
  std::printf("supernode %s: %u nodes, %u NPUs x %u dies, %u fabric planes, %u links, %s HBM "
              "per NPU; %u links down, %zu planes down, %zu NPUs lost\n",
              t.name.c_str(), t.num_nodes, t.num_npus, t.dies_per_npu, t.num_planes, t.num_links,
              format_bytes(static_cast<double>(t.hbm_bytes_per_npu)).c_str(), t.links_down,
              t.planes_down.size(), t.npus_lost.size());
}

void print_latency(const char* label, const proto::GenerateMetrics& m) {
  std::printf("  %s TTFT %.2f ms wall, %.3f ms modelled; TPOT %.2f ms wall, %.3f ms modelled\n",
              label, m.ttft_wall_ns / 1e6, m.ttft_modelled_ns / 1e6, m.tpot_wall_ns / 1e6,
              m.tpot_modelled_ns / 1e6);
}

// One generation, its text streamed to stdout as the frames arrive.
int stream_one(Client& client, const RunOptions& o) {
  proto::GenerateRequest request;
  request.prompt_text = o.prompt;
  request.max_new_tokens = o.max_new_tokens;
  request.temperature = 0.8f;
  request.top_p = 0.95f;
  request.seed = o.seed;
  std::printf("\ngenerate (streamed through moed): \"%s\" -> \"", o.prompt.c_str());
  std::fflush(stdout);
  auto done = client.generate(request, [](const proto::TokenFrame& frame) {
    std::fputs(frame.text.c_str(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::printf("\"\n");
  if (!done.ok()) return fail("generate", done.status());
  std::printf("  %u prompt tokens, %u generated (random weights: the text is noise)\n",
              done->prompt_tokens, done->generated_tokens);
  print_latency("this request:", done->metrics);
  return 0;
}

// `clients` concurrent clients, each its own connection and prompt.
int burst(const std::string& socket, const RunOptions& o) {
  std::printf("\n%u clients at once, %u tokens each (continuous batching in moed) ...\n",
              o.clients, o.max_new_tokens);
  std::vector<StatusOr<proto::GenerateDone>> results(
      o.clients, make_error(StatusCode::kInternal, "not run"));
  const int64_t start = wall_now_ns();
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < o.clients; ++i) {
    threads.emplace_back([&, i] {
      auto client = Client::connect({.socket_path = socket, .timeout_ms = 120000});
      if (!client.ok()) {
        results[i] = client.status();
        return;
      }
      proto::GenerateRequest request;
      request.prompt_text = strformat("Client %u asks the supernode", i);
      request.max_new_tokens = o.max_new_tokens;
      request.temperature = 0.8f;
      request.seed = o.seed + i;
      results[i] = client.value()->generate(request);
    });
  }
  for (std::thread& t : threads) t.join();
  const double wall_s = (wall_now_ns() - start) / 1e9;
  uint64_t tokens = 0;
  proto::GenerateMetrics mean;
  for (auto& r : results) {
    if (!r.ok()) return fail("a burst client", r.status());
    tokens += r->generated_tokens;
    mean.ttft_wall_ns += r->metrics.ttft_wall_ns / o.clients;
    mean.tpot_wall_ns += r->metrics.tpot_wall_ns / o.clients;
    mean.ttft_modelled_ns += r->metrics.ttft_modelled_ns / o.clients;
    mean.tpot_modelled_ns += r->metrics.tpot_modelled_ns / o.clients;
  }
  std::printf("  %llu tokens in %.2f s wall (%.0f tokens/s wall)\n",
              static_cast<unsigned long long>(tokens), wall_s, tokens / wall_s);
  print_latency("mean per client:", mean);
  return 0;
}

int print_metrics(Client& client) {
  auto metrics = client.metrics(proto::MetricsFormat::kPrometheus);
  if (!metrics.ok()) return fail("metrics", metrics.status());
  const std::string& m = metrics->text;
  auto v = [&](const char* name) { return daemon::prometheus_sample(m, name); };
  std::printf("\nfrom moed's metrics (moe metrics --prometheus):\n");
  std::printf("  requests finished %.0f, tokens generated %.0f, engine steps %.0f; decode steps "
              "over the %.0f ms TPOT target: %.0f of %.0f (modelled)\n",
              v("moe_generate_finished_total"), v("moe_generated_tokens_total"),
              v("moe_engine_steps_total"), v("moe_tpot_target_ms"),
              v("moe_decode_steps_over_target_total"), v("moe_decode_steps_total"));
  std::printf("  TTFT p50 %.2f / p99 %.2f ms wall, %.3f / %.3f ms modelled; TPOT p50 %.2f / p99 "
              "%.2f ms wall, %.3f / %.3f ms modelled\n",
              v("moe_ttft_wall_p50_ms"), v("moe_ttft_wall_p99_ms"), v("moe_ttft_modelled_p50_ms"),
              v("moe_ttft_modelled_p99_ms"), v("moe_tpot_wall_p50_ms"), v("moe_tpot_wall_p99_ms"),
              v("moe_tpot_modelled_p50_ms"), v("moe_tpot_modelled_p99_ms"));
  std::printf("  expert load balance: all %.0f routings so far under the current placement "
              "give routed tokens per NPU max / mean = %.2f in the worst MoE layer, %.2f on "
              "average (1.00 = even)\n",
              v("moe_expert_routed_tokens_total"), v("moe_expert_imbalance_max"),
              v("moe_expert_imbalance_mean"));
  if (v("moe_eplb_rebalances_total") > 0) {
    std::printf("  EPLB: %.0f re-placement(s) from the recent load (%.0f replicas copied); the "
                "last cut that load's imbalance %.2f -> %.2f, pausing serving at most %.1f ms "
                "wall per step (random weights: the routing drifts as the text does)\n",
                v("moe_eplb_rebalances_total"), v("moe_eplb_replicas_copied_total"),
                v("moe_eplb_last_imbalance_before"), v("moe_eplb_last_imbalance_after"),
                v("moe_eplb_last_pause_ms"));
  } else {
    std::printf("  EPLB: no re-placement (the load never called for one)\n");
  }
  return 0;
}

// One line per attention placement: the batch-1 floor and the largest batch within 15 ms.
int print_dsv3(const std::string& supernode) {
  auto config = models::model_config("deepseek-v3");
  if (!config.ok()) return fail("deepseek-v3", config.status());
  models::SimulateOptions options;
  options.supernode = supernode;
  options.phase = models::Phase::kDecode;
  options.kv_len = 4096;
  options.mtp = 1;
  options.mtp_accept = 0.7;
  options.moe_layers = 1;
  const double target_ns = 15e6;
  std::printf("\nDeepSeek-V3 decode at a 15 ms TPOT target (timing mode, modelled clock; %s, "
              "INT8, KV 4096, MTP 1 at 70%% acceptance) ...\n",
              supernode.c_str());
  const int64_t start = wall_now_ns();
  uint32_t simulations = 0;
  for (uint32_t split : {1u, 2u}) {
    options.attention_split = split;
    auto found = models::serving::decode_at_target(*config, options, target_ns, 256);
    if (!found.ok()) return fail("simulate deepseek-v3", found.status());
    const models::SimulateResult& b1 = found->batch1;
    simulations += found->evaluations;
    std::printf("  %s: batch 1 TPOT %.2f ms (step %.2f ms, busiest die's attention %.2f ms)",
                split == 1 ? "attention data-parallel over the dies" :
                             "attention split over the dies by heads",
                b1.tpot_ns / 1e6, b1.step_ns / 1e6, b1.attention_busiest_die_ns / 1e6);
    if (found->batch > 0) {
      const models::SimulateResult& best = found->at_batch;
      std::printf("; largest batch within 15 ms: %u per NPU, TPOT %.2f ms, %.1f tokens/s per "
                  "NPU, %.0f tokens/s on the supernode\n",
                  found->batch, best.tpot_ns / 1e6, best.tokens_per_s_per_npu,
                  best.tokens_per_s_per_npu * best.options.npus);
    } else {
      std::printf("; no batch holds 15 ms (%.0f%% over at batch 1)\n",
                  100.0 * (b1.tpot_ns / target_ns - 1));
    }
  }
  std::printf("  (%u simulations in %.1f s wall; moe simulate --attention-split 1|2 shows one "
              "configuration in full)\n",
              simulations, (wall_now_ns() - start) / 1e9);
  return 0;
}

}  // namespace

int cmd_run(int argc, char** argv) {
  RunOptions o;
  if (int status = parse(argc, argv, &o); status != 0) return status < 0 ? 0 : status;
  const int64_t start = wall_now_ns();

  std::printf("starting moed on the simulated supernode %s ...\n", o.supernode.c_str());
  auto daemon = DaemonProcess::start(
      executable_dir() + "/moed",
      {"--supernode", o.supernode, "--seed", std::to_string(o.seed), "--eplb-interval",
       o.eplb_interval},
      120000);
  if (!daemon.ok()) return fail("moed", daemon.status());
  auto client = Client::connect({.socket_path = daemon.value()->socket_path(), .timeout_ms = 120000});
  if (!client.ok()) return fail("connect", client.status());
  Client& c = *client.value();

  auto status = c.status();
  if (!status.ok()) return fail("status", status.status());
  std::printf("moed: %s on %s\n", status->daemon_version.c_str(),
              daemon.value()->socket_path().c_str());
  print_supernode(*status);

  auto loaded = c.load(proto::LoadRequest{});
  if (!loaded.ok()) return fail("load", loaded.status());
  const proto::ModelInfo& m = loaded->model;
  std::printf("\nloaded %s: %u layers, vocabulary %u, on %u NPUs (%u attention DP ranks), %s of "
              "weights in HBM, in %.0f ms wall\n",
              m.name.c_str(), m.num_layers, m.vocab_size, m.npus, m.attention_dp,
              format_bytes(static_cast<double>(m.weight_bytes)).c_str(), loaded->load_wall_ns / 1e6);

  if (int r = stream_one(c, o); r != 0) return r;
  if (o.clients > 0) {
    if (int r = burst(daemon.value()->socket_path(), o); r != 0) return r;
  }
  if (int r = print_metrics(c); r != 0) return r;
  if (o.dsv3) {
    if (int r = print_dsv3(o.supernode); r != 0) return r;
  }

  std::printf("\nstopping moed (draining shutdown) ...\n");
  Status stopped = daemon.value()->stop(&c);
  if (!stopped.ok()) return fail("stopping moed", stopped);
  std::printf("moed stopped cleanly. moe run took %.1f s wall.\n", (wall_now_ns() - start) / 1e9);
  return 0;
}

}  // namespace moe::tools
