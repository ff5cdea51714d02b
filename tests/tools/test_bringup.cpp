// The bring-up checks on small simulated supernodes: a healthy machine passes, and each kind
// of injected fault is reported exactly where it is (that NPU, that plane, that link) and
// nowhere else.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"
#include "tools/lib/bringup/bringup.h"

namespace bu = moe::tools::bringup;
using namespace moe;

namespace {

std::unique_ptr<dev::Driver> make_driver(const char* preset) {
  StatusOr<dev::Topology> t = sim::make_preset(preset);
  REQUIRE(t.ok());
  StatusOr<std::unique_ptr<dev::Driver>> d = sim::create_driver(*t);
  REQUIRE(d.ok());
  return std::move(d).value();
}

// Runs the device checks after injecting `spec` (empty: none).
bu::BringupReport run_with(dev::Driver& d, const std::string& spec) {
  if (!spec.empty()) {
    StatusOr<dev::FaultSpec> f = bu::parse_inject_spec(spec, d.topology());
    REQUIRE(f.ok());
    dev::FaultId id;
    REQUIRE(d.fault_inject(*f, &id).ok());
  }
  bu::BringupReport report;
  bu::CheckOptions options;
  options.hbm_sample_bytes = 16 * 1024;
  bu::run_device_checks(d, options, &report);
  return report;
}

size_t count(const bu::BringupReport& r, const std::string& check, bool passed) {
  size_t n = 0;
  for (const bu::CheckEntry& e : r.entries) n += (e.check == check && e.passed == passed) ? 1 : 0;
  return n;
}

}  // namespace

TEST_CASE("tools.bringup: a healthy supernode passes every check, within the rated figures") {
  auto d = make_driver("n64");
  const dev::Topology& t = d->topology();
  bu::BringupReport r = run_with(*d, "");
  CHECK(r.passed());
  CHECK(r.failures() == 0);
  CHECK(count(r, "hbm", true) == t.num_npus());
  CHECK(count(r, "link", true) == t.links.size());
  CHECK(count(r, "plane", true) == t.num_planes);
  CHECK(count(r, "all-to-all", true) == 1);
  // Every NPU link was measured, and its bandwidth is within 10% of its rated figure.
  size_t measured = 0;
  for (const bu::CheckEntry& e : r.entries) {
    if (e.check != "link" || e.unit != "GB/s") continue;
    ++measured;
    CHECK(e.measured > 0.9 * e.expected);
    CHECK(e.measured < 1.1 * e.expected);
  }
  CHECK(measured == static_cast<size_t>(t.num_npus()) * t.num_planes);
  CHECK(r.to_text().find("result: PASS") != std::string::npos);
  CHECK(r.to_json().find("\"passed\":true") != std::string::npos);
}

TEST_CASE("tools.bringup: the host check plans every NPU onto a synthetic multi-NUMA host") {
  StatusOr<dev::Topology> t = sim::make_preset("n64");
  REQUIRE(t.ok());
  StatusOr<rt::host::HostTopology> host = rt::host::HostTopology::from_synthetic("pack:2 numa:2 core:4 pu:1");
  REQUIRE(host.ok());
  bu::BringupReport r;
  bu::check_host(*t, *host, &r);
  CHECK(r.passed());
  REQUIRE(count(r, "placement", true) == 1);
  CHECK(r.host_text.find("4 NUMA node") != std::string::npos);
  CHECK(!r.placement_text.empty());
}

TEST_CASE("tools.bringup: plane-down:3 is reported as plane 3 and its links only") {
  auto d = make_driver("n64");
  const dev::Topology& t = d->topology();
  bu::BringupReport r = run_with(*d, "plane-down:3");
  CHECK(!r.passed());
  size_t plane3_links = 0;
  for (const dev::LinkDesc& l : t.links) plane3_links += l.plane == 3 ? 1 : 0;
  for (const bu::CheckEntry& e : r.entries) {
    if (e.passed) continue;
    CHECK_MESSAGE(e.plane == 3, e.message);
    CHECK((e.npu == dev::kInvalidId || e.check == "link"));
  }
  CHECK(count(r, "plane", false) == 1);
  CHECK(count(r, "link", false) == plane3_links);
  CHECK(count(r, "hbm", false) == 0);
  CHECK(count(r, "all-to-all", true) == 1);  // striping avoids the plane that is down
}

TEST_CASE("tools.bringup: npu-lost:5 is reported as NPU 5 only") {
  auto d = make_driver("n16");
  bu::BringupReport r = run_with(*d, "npu-lost:5");
  CHECK(!r.passed());
  for (const bu::CheckEntry& e : r.entries)
    if (!e.passed) CHECK_MESSAGE(e.npu == 5, e.message);
  CHECK(count(r, "hbm", false) == 1);
  CHECK(count(r, "npu", false) == 1);
  CHECK(count(r, "plane", false) == 0);
  CHECK(r.to_text().find("NPU 5") != std::string::npos);
}

TEST_CASE("tools.bringup: link-down is reported as that link, NPU link or switch uplink") {
  StatusOr<dev::Topology> t = sim::make_preset("n16");
  REQUIRE(t.ok());
  std::vector<dev::LinkId> targets = {t->link_of(5, 2)};
  for (const dev::LinkDesc& l : t->links)
    if (l.a.kind == dev::EndpointKind::kSwitch && l.b.kind == dev::EndpointKind::kSwitch && l.plane == 4) {
      targets.push_back(l.id);  // an L1 <-> L2 uplink: only cross-node traffic crosses it
      break;
    }
  REQUIRE(targets.size() == 2);
  for (dev::LinkId link : targets) {
    CAPTURE(link);
    auto d = make_driver("n16");
    bu::BringupReport r = run_with(*d, "link-down:" + std::to_string(link));
    CHECK(!r.passed());
    CHECK(r.failures() == 1);
    for (const bu::CheckEntry& e : r.entries)
      if (!e.passed) {
        CHECK(e.check == "link");
        CHECK(e.link == link);
        CHECK(e.plane == t->links[link].plane);
      }
    CHECK(count(r, "all-to-all", true) == 1);
  }
}

TEST_CASE("tools.bringup: hbm-error:9 is reported as NPU 9 only") {
  auto d = make_driver("n16");
  bu::BringupReport r = run_with(*d, "hbm-error:9");
  CHECK(!r.passed());
  CHECK(count(r, "hbm", false) == 1);
  for (const bu::CheckEntry& e : r.entries)
    if (!e.passed) CHECK_MESSAGE(e.npu == 9, e.message);
}

TEST_CASE("tools.bringup: a bad --inject spec is refused, naming the spec") {
  StatusOr<dev::Topology> t = sim::make_preset("n16");
  REQUIRE(t.ok());
  for (const char* bad : {"plane-down", "plane-down:", "plane-down:7", "npu-lost:16", "npu-lost:x",
                          "npu-lost:5x", "link-down:-1", "melt:3", ":3"}) {
    CAPTURE(bad);
    StatusOr<dev::FaultSpec> f = bu::parse_inject_spec(bad, *t);
    REQUIRE(!f.ok());
    CHECK(f.status().code() == StatusCode::kInvalidArgument);
    CHECK(f.status().message().find(bad) != std::string::npos);
  }
  StatusOr<dev::FaultSpec> ok = bu::parse_inject_spec("link-down:12", *t);
  REQUIRE(ok.ok());
  CHECK(ok->kind == dev::FaultKind::kLinkDown);
  CHECK(ok->target == 12);
}

namespace {

// Runs moe-bringup with `args`; returns its exit status and stdout.
int run_tool(const std::string& args, std::string* out) {
  const char* dir = std::getenv("MOE_BIN_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "MOE_BIN_DIR is not set (run through make test)");
  std::string cmd = std::string(dir) + "/moe-bringup " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  out->clear();
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("tools.bringup: moe-bringup exits 0 when healthy, 1 naming the fault, 2 on a bad spec") {
  std::string out;
  CHECK(run_tool("--supernode n16 --synthetic 'pack:2 numa:2 core:4 pu:1'", &out) == 0);
  CHECK(out.find("result: PASS") != std::string::npos);
  CHECK(run_tool("--supernode n16 --json --inject npu-lost:5", &out) == 1);
  CHECK(out.find("\"passed\":false") != std::string::npos);
  CHECK(out.find("\"npu\":5,") != std::string::npos);
  CHECK(run_tool("--supernode n16 --inject plane-down:9", &out) == 2);
  CHECK(run_tool("--supernode n16 --inject frobnicate:1", &out) == 2);
}
