// moe-bench: runs every registered benchmark, prints a table, writes the records as JSON.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "runtime/base/clock.h"
#include "tools/bench/bench_dispatch.h"
#include "tools/lib/bench/harness.h"

namespace {

void usage() {
  std::printf(
      "usage: moe-bench [--json FILE] [--filter TEXT] [--quick] [--list]\n"
      "       moe-bench dispatch [--ep N --tokens T --hidden H --topk K --quant int8|bf16 ...]\n"
      "                          [--json]   (one MoE dispatch + combine; --help for more)\n"
      "  Runs every benchmark (or those whose name contains TEXT). Each checks its own\n"
      "  results and reports a ratio against a baseline measured in the same run.\n"
      "  --json FILE  also write the records to FILE (make bench: build/bench.json)\n"
      "  --quick      fewer repetitions (a smoke run)\n"
      "  --list       list the benchmarks and exit\n"
      "  Exit status: 0 when every result check passed, 1 otherwise, 2 on bad usage.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "dispatch") == 0)
    return moe::bench::dispatch_command(argc - 1, argv + 1);
  std::string json_path;
  std::string filter;
  bool quick = false;
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (arg == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (arg == "--quick") {
      quick = true;
    } else if (arg == "--list") {
      list = true;
    } else if (arg == "--help" || arg == "-h") {
      usage();
      return 0;
    } else {
      std::fprintf(stderr, "moe-bench: unknown argument '%s'\n", arg.c_str());
      usage();
      return 2;
    }
  }
  auto entries = moe::bench::registry();
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  if (list) {
    for (const auto& e : entries) std::printf("%s\n", e.name.c_str());
    return 0;
  }
  moe::bench::Context ctx;
  ctx.quick = quick;
  for (const auto& e : entries) {
    if (!filter.empty() && e.name.find(filter) == std::string::npos) continue;
    std::fprintf(stderr, "moe-bench: running %s ...\n", e.name.c_str());
    int64_t t0 = moe::wall_now_ns();
    size_t before = ctx.records().size();
    e.fn(ctx);
    std::fprintf(stderr, "moe-bench: %s took %.1f s (wall)\n", e.name.c_str(),
                 (moe::wall_now_ns() - t0) * 1e-9);
    for (size_t i = before; i < ctx.records().size(); ++i) {
      const auto& r = ctx.records()[i];
      std::printf("%-34s %14.4g %-8s baseline %12.4g  ratio %8.3f  [%s]  %s  %s\n", r.name.c_str(),
                  r.value, r.unit.c_str(), r.baseline, r.ratio, r.clock.c_str(),
                  r.ok ? "ok" : "CHECK FAILED", r.note.c_str());
    }
  }
  bool all_ok = true;
  for (const auto& r : ctx.records()) all_ok = all_ok && r.ok;
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << moe::bench::records_to_json(ctx.records()) << "\n";
    if (!out) {
      std::fprintf(stderr, "moe-bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::printf("moe-bench: %zu records written to %s\n", ctx.records().size(), json_path.c_str());
  }
  std::printf("moe-bench: %s\n", all_ok ? "every result check passed" : "SOME RESULT CHECKS FAILED");
  return all_ok ? 0 : 1;
}
