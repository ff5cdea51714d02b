// moe-bringup: the appliance bring-up tool. Parses arguments, builds the driver (the
// simulator for a supernode description), injects the faults asked for, runs the checks of
// tools/lib/bringup and prints the report. Exit: 0 all passed, 1 something failed, 2 bad
// usage or setup.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "firmware-sim/description.h"
#include "firmware-sim/sim_driver.h"
#include "runtime/base/clock.h"
#include "tools/lib/bringup/bringup.h"

namespace {

using namespace moe;
namespace bu = moe::tools::bringup;

void usage(FILE* out) {
  std::fprintf(out,
               "usage: moe-bringup [options]\n"
               "Tests an appliance: host (hwloc) and NPU placement, HBM of every NPU, every link\n"
               "on every plane, a small all-to-all. Exit status 1 when anything failed.\n"
               "  --supernode NAME|FILE   preset (cm384, n8, n16, n64) or description file (default cm384)\n"
               "  --seed N                simulator seed (default 1)\n"
               "  --inject SPEC           inject a fault before testing (repeatable):\n"
               "                          plane-down:P  npu-lost:N  link-down:L  hbm-error:N\n"
               "  --synthetic DESC        plan placement on an hwloc synthetic host, e.g. \"pack:2 numa:4 core:8\"\n"
               "  --topology-xml FILE     plan placement on a host exported by lstopo --of xml\n"
               "  --hbm-sample-bytes N    bytes tested per NPU (multiple of 4096, default 65536)\n"
               "  --json                  print the report as JSON\n"
               "  --quiet                 no progress lines on stderr\n"
               "  --help                  this text\n");
}

bool parse_u64(const char* s, uint64_t* out) {
  if (!s || !*s) return false;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (*end != '\0' || s[0] == '-') return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string supernode = "cm384", synthetic, xml;
  bool have_synthetic = false, have_xml = false, json = false, quiet = false;
  uint64_t seed = 1;
  std::vector<std::string> injects;
  bu::CheckOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&](const char* what) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "moe-bringup: %s needs %s\n", a.c_str(), what);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--supernode") {
      supernode = need("a name or file");
    } else if (a == "--seed") {
      const char* v = need("a number");
      if (!parse_u64(v, &seed)) {
        std::fprintf(stderr, "moe-bringup: --seed '%s' is not a number\n", v);
        return 2;
      }
    } else if (a == "--inject") {
      injects.push_back(need("a fault spec"));
    } else if (a == "--synthetic") {
      synthetic = need("an hwloc synthetic description");
      have_synthetic = true;
    } else if (a == "--topology-xml") {
      xml = need("a file");
      have_xml = true;
    } else if (a == "--hbm-sample-bytes") {
      const char* v = need("a byte count");
      if (!parse_u64(v, &options.hbm_sample_bytes) || options.hbm_sample_bytes == 0 ||
          options.hbm_sample_bytes % 4096 != 0) {
        std::fprintf(stderr, "moe-bringup: --hbm-sample-bytes '%s' is not a positive multiple of 4096\n", v);
        return 2;
      }
    } else if (a == "--json") {
      json = true;
    } else if (a == "--quiet") {
      quiet = true;
    } else {
      std::fprintf(stderr, "moe-bringup: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (have_synthetic && have_xml) {
    std::fprintf(stderr, "moe-bringup: give --synthetic or --topology-xml, not both\n");
    return 2;
  }

  StatusOr<dev::Topology> topo = sim::load_description(supernode);
  if (!topo.ok()) {
    std::fprintf(stderr, "moe-bringup: supernode '%s': %s\n", supernode.c_str(),
                 topo.status().to_string().c_str());
    return 2;
  }
  std::vector<dev::FaultSpec> faults;
  for (const std::string& s : injects) {
    StatusOr<dev::FaultSpec> f = bu::parse_inject_spec(s, *topo);
    if (!f.ok()) {
      std::fprintf(stderr, "moe-bringup: %s\n", f.status().to_string().c_str());
      return 2;
    }
    faults.push_back(*f);
  }
  StatusOr<rt::host::HostTopology> host =
      have_synthetic ? rt::host::HostTopology::from_synthetic(synthetic)
      : have_xml     ? rt::host::HostTopology::from_xml_file(xml)
                     : rt::host::HostTopology::discover();
  if (!host.ok()) {
    std::fprintf(stderr, "moe-bringup: host topology: %s\n", host.status().to_string().c_str());
    return 2;
  }
  sim::SimConfig config;
  config.seed = seed;
  StatusOr<std::unique_ptr<dev::Driver>> driver = sim::create_driver(*topo, config);
  if (!driver.ok()) {
    std::fprintf(stderr, "moe-bringup: driver: %s\n", driver.status().to_string().c_str());
    return 2;
  }
  for (size_t k = 0; k < faults.size(); ++k) {
    dev::FaultId id;
    Status st = (*driver)->fault_inject(faults[k], &id);
    if (!st.ok()) {
      std::fprintf(stderr, "moe-bringup: --inject %s: %s\n", injects[k].c_str(), st.to_string().c_str());
      return 2;
    }
  }

  const int64_t t0 = wall_now_ns();
  if (!quiet)
    options.progress = [t0](const std::string& line) {
      std::fprintf(stderr, "[%7.3f s] %s\n", (wall_now_ns() - t0) * 1e-9, line.c_str());
    };
  bu::BringupReport report;
  report.injected = injects;
  if (options.progress) options.progress("host: " + host->summary().source);
  bu::check_host(*topo, *host, &report);
  bu::run_device_checks(**driver, options, &report);
  if (options.progress)
    options.progress(report.passed() ? "done: all checks passed"
                                     : "done: " + std::to_string(report.failures()) + " failures");
  std::fputs(json ? (report.to_json() + "\n").c_str() : report.to_text().c_str(), stdout);
  return report.passed() ? 0 : 1;
}
