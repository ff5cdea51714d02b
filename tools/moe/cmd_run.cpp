// `moe run`: the main job on the embedded simulated supernode.
//
// Brings the supernode up from its description, then proves the stack end to end: real
// bytes around a ring of every NPU (functional mode, checked byte by byte), and a
// DeepSeek-V3-shaped dispatch all-to-all on every NPU (timing mode), then the MoE engine: the
// built-in model placed on every NPU generating text (tools/moe/generate_job.h). Prints each
// figure with its clock.
#include <cstdio>
#include <cstring>
#include <string>

#include "firmware-sim/description.h"
#include "firmware-sim/sim_driver.h"
#include "runtime/base/strformat.h"
#include "tools/lib/smoke/fabric_smoke.h"
#include "tools/moe/commands.h"
#include "tools/moe/generate_job.h"

namespace moe::tools {
namespace {

void run_usage(FILE* out) {
  std::fprintf(out,
               "usage: moe run [--supernode NAME|FILE] [--seed N] [--ring-bytes BYTES] [--prompt TEXT]\n"
               "  Brings up the simulated supernode and runs the main job on it.\n"
               "  --supernode  a preset (cm384 (default), n8, n16, n64) or a description file\n"
               "  --seed       seed of the simulator's faults (default 1)\n"
               "  --ring-bytes bytes each NPU sends around the functional ring (default 256 KiB)\n"
               "  --prompt     what the built-in model continues at the end (default \"The supernode\";\n"
               "               moe generate has every generation option)\n");
}

void print_supernode(const dev::Driver& driver) {
  const dev::Topology& t = driver.topology();
  std::printf("supernode %s (%s)\n", t.name.c_str(), std::string(driver.name()).c_str());
  std::printf("  %u nodes, %u NPUs x %u dies, %zu host CPUs, %u planes, %zu switches, %zu links\n",
              t.num_nodes, t.num_npus(), t.dies_per_npu, t.cpus.size(), t.num_planes,
              t.switches.size(), t.links.size());
  std::printf("  per NPU: %.0f GB/s fabric (all planes, one direction), %s HBM at %.0f GB/s, "
              "%.0f TFLOPS BF16\n",
              t.npu_fabric_bandwidth_gbps(0), format_bytes(static_cast<double>(t.hbm.capacity_bytes)).c_str(),
              t.hbm.bandwidth_gbps, t.compute.bf16_tflops * t.dies_per_npu);
}

}  // namespace

int cmd_run(int argc, char** argv) {
  std::string supernode = "cm384";
  uint64_t seed = 1;
  uint64_t ring_bytes = 256 << 10;
  GenerateJob job;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    auto need_value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "moe run: %s needs a value\n", flag);
        return nullptr;
      }
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      run_usage(stdout);
      return 0;
    } else if (arg == "--supernode") {
      const char* v = need_value("--supernode");
      if (!v) return 2;
      supernode = v;
    } else if (arg == "--prompt") {
      const char* v = need_value("--prompt");
      if (!v) return 2;
      if (*v == '\0') {
        std::fprintf(stderr, "moe run: --prompt must not be empty\n");
        return 2;
      }
      job.prompts = {v};
    } else if (arg == "--seed" || arg == "--ring-bytes") {
      const char* v = need_value(arg.c_str());
      if (!v) return 2;
      char* end = nullptr;
      unsigned long long parsed = std::strtoull(v, &end, 0);
      if (end == v || *end != '\0') {
        std::fprintf(stderr, "moe run: %s expects a number, got '%s'\n", arg.c_str(), v);
        return 2;
      }
      (arg == "--seed" ? seed : ring_bytes) = parsed;
    } else {
      std::fprintf(stderr, "moe run: unknown argument '%s'\n", arg.c_str());
      run_usage(stderr);
      return 2;
    }
  }

  if (ring_bytes == 0 || ring_bytes % 4096 != 0) {
    std::fprintf(stderr, "moe run: --ring-bytes must be a positive multiple of 4096, got %llu\n",
                 static_cast<unsigned long long>(ring_bytes));
    return 2;
  }
  StatusOr<dev::Topology> topology = sim::load_description(supernode);
  if (!topology.ok()) {
    std::fprintf(stderr, "moe run: %s\n", topology.status().to_string().c_str());
    return 1;
  }
  sim::SimConfig config;
  config.seed = seed;
  auto driver = sim::create_driver(std::move(topology).value(), config);
  if (!driver.ok()) {
    std::fprintf(stderr, "moe run: cannot start the simulator: %s\n", driver.status().to_string().c_str());
    return 1;
  }
  dev::Driver& drv = **driver;
  print_supernode(drv);

  std::printf("\nfunctional: ring exchange of %s per NPU over all %u NPUs ...\n",
              format_bytes(static_cast<double>(ring_bytes)).c_str(), drv.topology().num_npus());
  RingResult ring;
  Status s = ring_exchange(drv, ring_bytes, &ring);
  if (!s.ok()) {
    std::fprintf(stderr, "moe run: ring exchange failed: %s\n", s.to_string().c_str());
    return 1;
  }
  std::printf("  %s: %llu bad bytes; %.2f us modelled, %.1f ms wall\n",
              ring.bad_bytes == 0 ? "every byte arrived" : "CORRUPTION",
              static_cast<unsigned long long>(ring.bad_bytes), ring.modelled_makespan.us(),
              ring.wall_ns * 1e-6);

  // DeepSeek-V3 decode dispatch: 128 tokens per NPU x top-8 x 7168 bytes (INT8), spread
  // evenly over the other NPUs.
  const uint32_t n = drv.topology().num_npus();
  uint64_t dispatch_bytes_per_npu = 128ull * 8 * 7168;
  uint64_t per_pair = n > 1 ? (dispatch_bytes_per_npu + n - 2) / (n - 1) : dispatch_bytes_per_npu;
  std::printf("\ntiming: dispatch-shaped all-to-all, %s per NPU pair, %u x %u transfers ...\n",
              format_bytes(static_cast<double>(per_pair)).c_str(), n, n - 1);
  AllToAllResult a2a;
  s = timing_all_to_all(drv, per_pair, &a2a);
  if (!s.ok()) {
    std::fprintf(stderr, "moe run: all-to-all failed: %s\n", s.to_string().c_str());
    return 1;
  }
  double rated = drv.topology().npu_fabric_bandwidth_gbps(0);
  std::printf("  %.2f us modelled (%.0f GB/s per NPU, %.0f%% of the rated %.0f GB/s); %.1f ms wall\n",
              a2a.modelled_makespan.us(), a2a.modelled_gbps_per_npu,
              100.0 * a2a.modelled_gbps_per_npu / rated, rated, a2a.wall_ns * 1e-6);

  dev::NpuState st;
  uint64_t resident = 0;
  for (dev::NpuId npu = 0; npu < n; ++npu)
    if (drv.npu_state(npu, &st).ok()) resident += st.hbm_resident_bytes;
  std::printf("\nsimulated HBM backed by host memory after the run: %s (of %s nominal)\n",
              format_bytes(static_cast<double>(resident)).c_str(),
              format_bytes(static_cast<double>(drv.topology().hbm.capacity_bytes) * n).c_str());
  if (ring.bad_bytes != 0) return 1;
  job.supernode = supernode;
  return run_generate_job(job);
}

}  // namespace moe::tools
