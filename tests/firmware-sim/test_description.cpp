// Supernode description files: presets, parsing, round trips, and every refusal.
//
// Refusals are tested two ways: by mutating a valid Topology (n16: 2 nodes x 8 NPUs, 8 CPUs,
// 7 planes; on plane p the switches are 3p (L1, node 0), 3p+1 (L1, node 1), 3p+2 (L2), and
// links 18p+n join NPU n to its L1, 18p+16 and 18p+17 join the L1s to the L2), and by
// editing the text of firmware-sim/examples/two_node.json. Each checks the status code and
// that the message names the field's path and the reason.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "firmware-sim/description.h"
#include "firmware-sim/presets.h"
#include "firmware-sim/validate.h"
#include "runtime/base/strformat.h"

namespace {

using moe::Status;
using moe::StatusCode;
using moe::strformat;
using moe::dev::EndpointKind;
using moe::dev::SwitchLevel;
using moe::dev::Topology;

Topology preset(const char* name) {
  auto t = moe::sim::make_preset(name);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(t).value();
}

std::string source_root() {
  const char* root = std::getenv("MOE_SOURCE_ROOT");
  return root && *root ? root : ".";
}

std::string example_path() { return source_root() + "/firmware-sim/examples/two_node.json"; }

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path << " (set MOE_SOURCE_ROOT to the repo root)");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string example_text() { return read_text(example_path()); }

// `text` with its only occurrence of `from` replaced by `to`.
std::string replace_once(std::string text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  REQUIRE_MESSAGE(at != std::string::npos, "'" << from << "' not in the text");
  REQUIRE_MESSAGE(text.find(from, at + 1) == std::string::npos, "'" << from << "' occurs twice");
  return text.replace(at, from.size(), to);
}

// 1-based line of the first occurrence of `needle`.
int line_of(const std::string& text, const std::string& needle) {
  size_t at = text.find(needle);
  REQUIRE(at != std::string::npos);
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(at), '\n'));
}

// The first field in which two topologies differ (derived indexes included), or "".
std::string first_difference(const Topology& a, const Topology& b) {
#define MOE_SAME(field) \
  if (!(a.field == b.field)) return #field
  MOE_SAME(name);
  MOE_SAME(num_nodes);
  MOE_SAME(num_planes);
  MOE_SAME(dies_per_npu);
  MOE_SAME(packet_bytes);
  MOE_SAME(packet_header_bytes);
  MOE_SAME(host_link_bandwidth_gbps);
  MOE_SAME(compute.bf16_tflops);
  MOE_SAME(compute.int8_tops);
  MOE_SAME(compute.matmul_bandwidth_efficiency);
  MOE_SAME(compute.matmul_compute_efficiency);
  MOE_SAME(compute.launch_ns);
  MOE_SAME(hbm.capacity_bytes);
  MOE_SAME(hbm.bandwidth_gbps);
  MOE_SAME(cpus.size());
  MOE_SAME(npus.size());
  MOE_SAME(switches.size());
  MOE_SAME(links.size());
  MOE_SAME(npu_plane_link);
  MOE_SAME(npus_of_node);
  MOE_SAME(npus_near_cpu);
#undef MOE_SAME
  for (size_t i = 0; i < a.cpus.size(); ++i) {
    const auto &x = a.cpus[i], &y = b.cpus[i];
    if (x.id != y.id || x.node != y.node || x.cores != y.cores) return strformat("cpus[%zu]", i);
  }
  for (size_t i = 0; i < a.npus.size(); ++i) {
    const auto &x = a.npus[i], &y = b.npus[i];
    if (x.id != y.id || x.node != y.node || x.index_in_node != y.index_in_node ||
        x.near_cpu != y.near_cpu)
      return strformat("npus[%zu]", i);
  }
  for (size_t i = 0; i < a.switches.size(); ++i) {
    const auto &x = a.switches[i], &y = b.switches[i];
    if (x.id != y.id || x.level != y.level || x.plane != y.plane || x.node != y.node)
      return strformat("switches[%zu]", i);
  }
  for (size_t i = 0; i < a.links.size(); ++i) {
    const auto &x = a.links[i], &y = b.links[i];
    if (x.id != y.id || x.plane != y.plane || !(x.a == y.a) || !(x.b == y.b) ||
        x.bandwidth_gbps != y.bandwidth_gbps || x.latency_ns != y.latency_ns)
      return strformat("links[%zu]", i);
  }
  return "";
}

Topology round_trip(const Topology& t) {
  std::string json = moe::sim::description_to_json(t);
  auto back = moe::sim::parse_description_json(json, t.name);
  REQUIRE_MESSAGE(back.ok(), back.status().to_string());
  return std::move(back).value();
}

// Removes link `id` and renumbers the links after it, keeping ids dense.
void erase_link(Topology& t, uint32_t id) {
  t.links.erase(t.links.begin() + id);
  for (uint32_t i = id; i < t.links.size(); ++i) t.links[i].id = i;
}

void check_status(const Status& s, StatusCode code, const std::string& path,
                  const std::string& reason) {
  INFO("status: " << s.to_string());
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == code);
  CHECK(s.message().find(path) != std::string::npos);
  CHECK(s.message().find(reason) != std::string::npos);
}

// A temporary directory removed at the end of the test.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           strformat("moe-test-description-%d-%p", static_cast<int>(::getpid()),
                     static_cast<void*>(this));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    std::string file = (path / name).string();
    std::ofstream(file, std::ios::binary) << text;
    return file;
  }
};

}  // namespace

TEST_CASE("sim.description: every preset validates and round-trips through JSON exactly") {
  for (const std::string& name : moe::sim::preset_names()) {
    INFO("preset " << name);
    Topology t = preset(name.c_str());
    Status valid = moe::sim::validate_topology(t);
    CHECK_MESSAGE(valid.ok(), valid.to_string());
    Topology back = round_trip(t);
    CHECK(first_difference(t, back) == "");
    // Writing is deterministic, so the text is a fixed point too.
    CHECK(moe::sim::description_to_json(back) == moe::sim::description_to_json(t));
  }
}

TEST_CASE("sim.description: cm384 has the published shape") {
  Topology t = round_trip(preset("cm384"));
  CHECK(t.name == "cm384");
  CHECK(t.num_nodes == 48);
  CHECK(t.num_npus() == 384);
  CHECK(t.cpus.size() == 192);
  CHECK(t.num_planes == 7);
  CHECK(t.dies_per_npu == 2);
  CHECK(t.switches.size() == 7 * 48 + 7);
  size_t l2 = 0;
  for (const auto& s : t.switches) l2 += s.level == SwitchLevel::kL2;
  CHECK(l2 == 7);
  CHECK(t.links.size() == 7 * 384 + 7 * 48);  // every NPU on every plane, every L1 uplink
  for (uint32_t n = 0; n < t.num_npus(); ++n) {
    CHECK(t.npu_fabric_bandwidth_gbps(n) == doctest::Approx(392.0));
    CHECK(t.cpus[t.npus[n].near_cpu].node == t.npus[n].node);
  }
  for (uint32_t node = 0; node < t.num_nodes; ++node) CHECK(t.npus_of_node[node].size() == 8);
  CHECK(t.hbm.capacity_bytes == (128ull << 30));
  std::string summary = moe::sim::describe_topology(t);
  CHECK(summary.find("384 NPUs") != std::string::npos);
  CHECK(summary.find("392 GB/s per NPU") != std::string::npos);
  CHECK(summary.find("343 switches (336 L1, 7 L2)") != std::string::npos);
}

TEST_CASE("sim.description: numbers of any precision round-trip exactly") {
  Topology t = preset("n16");
  t.name = "odd \"quoted\"\tname\\";
  t.host_link_bandwidth_gbps = 0.1 + 0.2;
  t.compute.bf16_tflops = 752.0 / 3;
  t.compute.int8_tops = 1e-300;
  t.compute.matmul_bandwidth_efficiency = std::nextafter(1.0, 0.0);
  t.compute.launch_ns = 5e-324;  // the smallest subnormal
  t.hbm.capacity_bytes = std::numeric_limits<uint64_t>::max();
  t.hbm.bandwidth_gbps = 1.7976931348623157e308;
  t.links[5].bandwidth_gbps = 1.0 / 3;
  t.links[6].latency_ns = 0;
  t.links[7].latency_ns = 123456789.123456789;
  t.packet_bytes = moe::sim::kMaxPacketBytes;
  t.packet_header_bytes = moe::sim::kMaxPacketBytes - 1;
  REQUIRE(moe::sim::validate_topology(t).ok());
  t.finalize();
  CHECK(first_difference(t, round_trip(t)) == "");
}

TEST_CASE("sim.description: the two-node example file parses") {
  auto loaded = moe::sim::load_description_file(example_path());
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
  const Topology& t = *loaded;
  CHECK(t.name == "two_node");
  CHECK(t.num_nodes == 2);
  CHECK(t.num_planes == 2);
  CHECK(t.num_npus() == 4);
  CHECK(t.cpus.size() == 2);
  CHECK(t.switches.size() == 6);
  CHECK(t.links.size() == 12);
  CHECK(t.packet_bytes == 256);
  CHECK(t.packet_header_bytes == 16);
  CHECK(t.compute.matmul_compute_efficiency == 0.85);
  CHECK(t.hbm.capacity_bytes == (16ull << 30));
  CHECK(t.switches[2].level == SwitchLevel::kL2);
  CHECK(t.switches[2].node == moe::dev::kInvalidId);
  // Derived indexes are built: NPU 2 is node 1's first, its plane-1 link is link 8.
  CHECK(t.npus_of_node[1] == std::vector<uint32_t>{2, 3});
  CHECK(t.npus_near_cpu[0] == std::vector<uint32_t>{0, 1});
  CHECK(t.link_of(2, 1) == 8);
  CHECK(t.npu_fabric_bandwidth_gbps(3) == 200.0);
  // The same through load_description, and a file written back out reads back the same.
  auto by_name = moe::sim::load_description(example_path());
  REQUIRE(by_name.ok());
  CHECK(first_difference(t, *by_name) == "");
  CHECK(first_difference(t, round_trip(t)) == "");
}

TEST_CASE("sim.description: fields with defaults may be left out") {
  std::string text = example_text();
  text = replace_once(text, "\"dies_per_npu\": 2,\n", "");
  text = replace_once(text, "\"packet_header_bytes\": 16,\n", "");
  text = replace_once(text, ", \"matmul_bandwidth_efficiency\": 0.6, \"matmul_compute_efficiency\": "
                            "0.85, \"launch_ns\": 2500}", "}");
  auto t = moe::sim::parse_description_json(text, "defaults.json");
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  CHECK(t->dies_per_npu == 1);
  CHECK(t->packet_header_bytes == 0);
  CHECK(t->compute.matmul_bandwidth_efficiency == 0.57);
  CHECK(t->compute.matmul_compute_efficiency == 0.9);
  CHECK(t->compute.launch_ns == 0);
}

TEST_CASE("sim.description: load_description finds presets and refuses unknown names") {
  auto n8 = moe::sim::load_description("n8");
  REQUIRE(n8.ok());
  CHECK(n8->num_npus() == 8);
  CHECK(n8->npu_plane_link.size() == 8 * 7);

  auto none = moe::sim::load_description("no-such");
  REQUIRE_FALSE(none.ok());
  CHECK(none.status().code() == StatusCode::kNotFound);
  for (const std::string& name : moe::sim::preset_names())
    CHECK(none.status().message().find(name) != std::string::npos);
  CHECK(none.status().message().find("no-such") != std::string::npos);
}

// ---- refusals of a Topology ------------------------------------------------------------

TEST_CASE("sim.validate: each broken rule is refused, naming the field and the reason") {
  struct Case {
    const char* what;
    std::function<void(Topology&)> mutate;
    const char* path;
    const char* reason;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<Case> cases = {
      // scalars
      {"zero nodes", [](Topology& t) { t.num_nodes = 0; }, "num_nodes", "must be 1..65536 (got 0)"},
      {"no planes", [](Topology& t) { t.num_planes = 0; }, "num_planes", "must be 1..16 (got 0)"},
      {"too many planes", [](Topology& t) { t.num_planes = 17; }, "num_planes",
       "must be 1..16 (got 17)"},
      {"no dies", [](Topology& t) { t.dies_per_npu = 0; }, "dies_per_npu", "must be 1..64 (got 0)"},
      {"zero packet", [](Topology& t) { t.packet_bytes = 0; }, "packet_bytes",
       "must be 1..65536 (got 0)"},
      {"huge packet", [](Topology& t) { t.packet_bytes = 65537; }, "packet_bytes",
       "must be 1..65536 (got 65537)"},
      {"header as big as packet", [](Topology& t) { t.packet_header_bytes = t.packet_bytes; },
       "packet_header_bytes", "must be < packet_bytes 512 (got 512)"},
      {"zero host link", [](Topology& t) { t.host_link_bandwidth_gbps = 0; },
       "host_link_bandwidth_gbps", "must be a finite number > 0 (got 0)"},
      {"NaN BF16 rate", [nan](Topology& t) { t.compute.bf16_tflops = nan; }, "compute.bf16_tflops",
       "must be a finite number > 0 (got nan)"},
      {"negative INT8 rate", [](Topology& t) { t.compute.int8_tops = -1; }, "compute.int8_tops",
       "must be a finite number > 0 (got -1)"},
      {"efficiency above 1", [](Topology& t) { t.compute.matmul_compute_efficiency = 1.5; },
       "compute.matmul_compute_efficiency", "must be in (0, 1] (got 1.5)"},
      {"zero efficiency", [](Topology& t) { t.compute.matmul_bandwidth_efficiency = 0; },
       "compute.matmul_bandwidth_efficiency", "must be in (0, 1] (got 0)"},
      {"negative launch cost", [](Topology& t) { t.compute.launch_ns = -5; }, "compute.launch_ns",
       "must be a finite number >= 0 (got -5)"},
      {"zero HBM capacity", [](Topology& t) { t.hbm.capacity_bytes = 0; }, "hbm.capacity_bytes",
       "must be > 0 (got 0)"},
      {"infinite HBM bandwidth", [inf](Topology& t) { t.hbm.bandwidth_gbps = inf; },
       "hbm.bandwidth_gbps", "must be a finite number > 0 (got inf)"},
      // cpus
      {"duplicate cpu id", [](Topology& t) { t.cpus[3].id = 2; }, "cpus[3].id", "duplicate id 2"},
      {"cpu on a missing node", [](Topology& t) { t.cpus[6].node = 2; }, "cpus[6].node",
       "2 >= num_nodes 2"},
      {"cpu without cores", [](Topology& t) { t.cpus[1].cores = 0; }, "cpus[1].cores",
       "must be > 0 (got 0)"},
      // npus
      {"no NPUs", [](Topology& t) { t.npus.clear(); }, "npus", "must list at least one NPU"},
      {"duplicate npu id", [](Topology& t) { t.npus[5].id = 4; }, "npus[5].id", "duplicate id 4"},
      {"npu id out of order", [](Topology& t) { t.npus[5].id = 9; }, "npus[5].id",
       "9 out of order (ids are dense, so this one must be 5)"},
      {"npu on a missing node", [](Topology& t) { t.npus[2].node = 9; }, "npus[2].node",
       "9 >= num_nodes 2"},
      {"npu near a missing cpu", [](Topology& t) { t.npus[7].near_cpu = 40; }, "npus[7].near_cpu",
       "cpu 40 does not exist"},
      {"npu near a cpu of another node", [](Topology& t) { t.npus[1].near_cpu = 4; },
       "npus[1].near_cpu", "cpu 4 is on node 1, but the NPU is on node 0"},
      {"index in node skips", [](Topology& t) { t.npus[3].index_in_node = 5; },
       "npus[3].index_in_node", "expected 3"},
      // switches
      {"duplicate switch id", [](Topology& t) { t.switches[4].id = 3; }, "switches[4].id",
       "duplicate id 3"},
      {"unknown switch level", [](Topology& t) { t.switches[0].level = static_cast<SwitchLevel>(7); },
       "switches[0].level", "unknown level 7"},
      {"switch on a missing plane", [](Topology& t) { t.switches[0].plane = 7; },
       "switches[0].plane", "7 >= num_planes 7"},
      {"L1 switch on a missing node", [](Topology& t) { t.switches[0].node = 5; },
       "switches[0].node", "5 >= num_nodes 2"},
      {"L1 switch without a node",
       [](Topology& t) { t.switches[1].node = moe::dev::kInvalidId; }, "switches[1].node",
       "missing (an L1 switch sits on a node)"},
      {"L2 switch on a node", [](Topology& t) { t.switches[2].node = 0; }, "switches[2].node",
       "an L2 switch sits on no node (got 0"},
      // links
      {"duplicate link id", [](Topology& t) { t.links[9].id = 8; }, "links[9].id", "duplicate id 8"},
      {"link to a missing switch", [](Topology& t) { t.links[12].b.id = 999; }, "links[12].b",
       "switch 999 does not exist"},
      {"link to a missing npu", [](Topology& t) { t.links[3].a.id = 500; }, "links[3].a",
       "npu 500 does not exist"},
      {"unknown endpoint kind", [](Topology& t) { t.links[3].a.kind = static_cast<EndpointKind>(9); },
       "links[3].a.kind", "unknown endpoint kind 9"},
      {"zero bandwidth", [](Topology& t) { t.links[3].bandwidth_gbps = 0; },
       "links[3].bandwidth_gbps", "must be a finite number > 0 (got 0)"},
      {"negative bandwidth", [](Topology& t) { t.links[16].bandwidth_gbps = -56; },
       "links[16].bandwidth_gbps", "must be a finite number > 0 (got -56)"},
      {"NaN bandwidth", [nan](Topology& t) { t.links[4].bandwidth_gbps = nan; },
       "links[4].bandwidth_gbps", "(got nan)"},
      {"negative latency", [](Topology& t) { t.links[4].latency_ns = -1; }, "links[4].latency_ns",
       "must be a finite number >= 0 (got -1)"},
      {"link on a missing plane", [](Topology& t) { t.links[0].plane = 7; }, "links[0].plane",
       "7 >= num_planes 7"},
      {"link plane differs from its switch's",
       [](Topology& t) { t.links[0].plane = 1; }, "links[0].b",
       "switch 0 is on plane 0, but the link is on plane 1"},
      {"two NPUs joined directly",
       [](Topology& t) { t.links[0].b = {EndpointKind::kNpu, 1}; }, "links[0]",
       "joins npu 0 to npu 1 directly"},
      {"NPU joined to an L2 switch",
       [](Topology& t) { t.links[0].b = {EndpointKind::kSwitch, 2}; }, "links[0].b",
       "npu 0 joins L2 switch 2 (an NPU joins only an L1 switch)"},
      {"NPU joined to another node's L1 switch",
       [](Topology& t) { t.links[0].b = {EndpointKind::kSwitch, 1}; }, "links[0].b",
       "L1 switch 1 is on node 1, but npu 0 is on node 0"},
      {"link from a switch to itself", [](Topology& t) { t.links[16].b = t.links[16].a; },
       "links[16].b", "the same switch 0 as .a"},
      // per plane
      {"NPU without a link on a plane", [](Topology& t) { erase_link(t, 6 * 18 + 15); },
       "npus[15]", "no link on plane 6"},
      {"NPU with two links on a plane",
       [](Topology& t) {
         moe::dev::LinkDesc extra = t.links[0];
         extra.id = static_cast<uint32_t>(t.links.size());
         t.links.push_back(extra);
       },
       "links[126].a", "npu 0 already has link 0 on plane 0"},
      {"unreachable NPUs", [](Topology& t) { erase_link(t, 3 * 18 + 17); }, "links",
       "on plane 3, npu 8 cannot reach npu 0 (unreachable"},
  };
  for (const Case& c : cases) {
    INFO("case: " << std::string(c.what));
    Topology t = preset("n16");
    c.mutate(t);
    check_status(moe::sim::validate_topology(t), StatusCode::kInvalidArgument, c.path, c.reason);
  }
}

TEST_CASE("sim.validate: an L1 switch on a node without NPUs is fine") {
  Topology t = preset("n16");
  t.num_nodes = 3;
  moe::dev::SwitchDesc spare{static_cast<uint32_t>(t.switches.size()), SwitchLevel::kL1, 0, 2};
  t.switches.push_back(spare);
  moe::dev::LinkDesc uplink = t.links[16];  // plane 0: L1 of node 0 to the L2
  uplink.id = static_cast<uint32_t>(t.links.size());
  uplink.a = {EndpointKind::kSwitch, spare.id};
  t.links.push_back(uplink);
  Status s = moe::sim::validate_topology(t);
  CHECK_MESSAGE(s.ok(), s.to_string());
}

TEST_CASE("sim.validate: several problems are reported together, the first one first") {
  Topology t = preset("n16");
  t.host_link_bandwidth_gbps = 0;
  for (auto& c : t.cpus) c.cores = 0;  // 8 problems
  t.links[3].bandwidth_gbps = 0;
  Status s = moe::sim::validate_topology(t);
  REQUIRE_FALSE(s.ok());
  const std::string& m = s.message();
  CHECK(m.rfind("host_link_bandwidth_gbps: must be a finite number > 0 (got 0); cpus[0].cores", 0) == 0);
  CHECK(m.find("cpus[3].cores") != std::string::npos);
  CHECK(m.find("cpus[4].cores") == std::string::npos);  // beyond the first 5
  CHECK(m.find("links[3]") == std::string::npos);
  CHECK(m.find("; and 5 more problem(s)") != std::string::npos);
}

// ---- refusals of a file ----------------------------------------------------------------

TEST_CASE("sim.description: a syntax error names the origin, line and column") {
  std::string text = example_text();
  // Drop the comma after npus[1]'s object.
  const std::string line1 = "{\"id\": 1, \"node\": 0, \"index_in_node\": 1, \"near_cpu\": 0},";
  std::string bad = replace_once(text, line1, line1.substr(0, line1.size() - 1));
  int line = line_of(bad, "{\"id\": 2, \"node\": 1, \"index_in_node\": 0");
  auto t = moe::sim::parse_description_json(bad, "two_node.json");
  check_status(t.status(), StatusCode::kParseError, strformat("two_node.json:%d:", line),
               "expecting: , instead got: {");
}

TEST_CASE("sim.description: text that is not a description of this schema is a parse error") {
  std::string text = example_text();
  struct Case {
    const char* what;
    std::string text;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"unknown field", replace_once(text, "\"num_planes\": 2,", "\"num_planes\": 2, \"bogus\": 3,"),
       "unknown field: bogus"},
      {"misspelt field in a link",
       replace_once(text, "\"bandwidth_gbps\": 200, \"latency_ns\": 250},\n    {\"id\": 6",
                    "\"bandwdith_gbps\": 200, \"latency_ns\": 250},\n    {\"id\": 6"),
       "unknown field: bandwdith_gbps"},
      {"field set twice", replace_once(text, "\"num_nodes\": 2,", "\"num_nodes\": 2, \"num_nodes\": 3,"),
       "field set more than once: num_nodes"},
      {"negative count", replace_once(text, "{\"id\": 1, \"node\": 1, \"cores\": 16}",
                                      "{\"id\": 1, \"node\": 1, \"cores\": -16}"),
       "constant does not fit"},
      {"unknown enum name", replace_once(text, "{\"id\": 5, \"level\": \"L2\"", "{\"id\": 5, \"level\": \"L3\""),
       "unknown enum value: L3"},
      {"string for a number", replace_once(text, "\"packet_bytes\": 256", "\"packet_bytes\": \"big\""),
       strformat("in.json:%d:", line_of(text, "\"packet_bytes\""))},
      {"unquoted field name", replace_once(text, "\"num_nodes\": 2", "num_nodes: 2"),
       strformat("in.json:%d:", line_of(text, "\"num_nodes\""))},
      {"trailing text", text + "{}", "expecting: end of file"},
      {"empty text", "", "empty"},
      {"not an object", "[1, 2]", "expecting"},
      {"NUL byte", text.substr(0, 20) + std::string(1, '\0') + text.substr(20), "NUL byte at offset 20"},
  };
  for (const Case& c : cases) {
    INFO("case: " << std::string(c.what));
    auto t = moe::sim::parse_description_json(c.text, "in.json");
    check_status(t.status(), StatusCode::kParseError, "in.json", c.reason);
  }
}

TEST_CASE("sim.description: a required field left out is named") {
  std::string text = example_text();
  struct Case {
    std::string text;
    std::string path;
  };
  const std::vector<Case> cases = {
      {replace_once(text, "\"version\": 1,\n", ""), "version"},
      {replace_once(text, "\"name\": \"two_node\",\n", ""), "name"},
      {replace_once(text, "\"num_planes\": 2,\n", ""), "num_planes"},
      {replace_once(text, "\"host_link_bandwidth_gbps\": 32,\n", ""), "host_link_bandwidth_gbps"},
      {replace_once(text, "\"bf16_tflops\": 100, ", ""), "compute.bf16_tflops"},
      {replace_once(text, "\"hbm\": {\"capacity_bytes\": 17179869184, \"bandwidth_gbps\": 1600},\n", ""),
       "hbm"},
      {replace_once(text, "\"index_in_node\": 1, \"near_cpu\": 1}", "\"index_in_node\": 1}"),
       "npus[3].near_cpu"},
      {replace_once(text, "{\"id\": 1, \"node\": 1, \"cores\": 16}", "{\"id\": 1, \"node\": 1}"),
       "cpus[1].cores"},
      {replace_once(text, "{\"id\": 4, \"level\": \"L1\", ", "{\"id\": 4, "), "switches[4].level"},
      {replace_once(text, "\"a\": {\"kind\": \"Npu\", \"id\": 3}, \"b\": {\"kind\": \"Switch\", \"id\": 4}",
                    "\"a\": {\"kind\": \"Npu\", \"id\": 3}"),
       "links[9].b"},
      {replace_once(text, "\"a\": {\"kind\": \"Npu\", \"id\": 3}, \"b\": {\"kind\": \"Switch\", \"id\": 4}",
                    "\"a\": {\"kind\": \"Npu\", \"id\": 3}, \"b\": {\"id\": 4}"),
       "links[9].b.kind"},
      {replace_once(text, "\"id\": 11, \"plane\": 1,", "\"plane\": 1,"), "links[11].id"},
  };
  for (const Case& c : cases) {
    INFO("missing " << c.path);
    auto t = moe::sim::parse_description_json(c.text, "in.json");
    check_status(t.status(), StatusCode::kInvalidArgument, "in.json: " + c.path + ": missing", "");
  }
}

TEST_CASE("sim.description: versions, enum numbers and validation errors from a file") {
  std::string text = example_text();
  auto newer = moe::sim::parse_description_json(replace_once(text, "\"version\": 1", "\"version\": 2"),
                                                "in.json");
  check_status(newer.status(), StatusCode::kUnsupported, "in.json: version",
               "2 is newer than this build reads (1)");
  auto zero = moe::sim::parse_description_json(replace_once(text, "\"version\": 1", "\"version\": 0"),
                                               "in.json");
  check_status(zero.status(), StatusCode::kInvalidArgument, "in.json: version", "must be >= 1 (got 0)");
  auto level = moe::sim::parse_description_json(
      replace_once(text, "{\"id\": 5, \"level\": \"L2\"", "{\"id\": 5, \"level\": 7"), "in.json");
  check_status(level.status(), StatusCode::kInvalidArgument, "in.json: switches[5].level",
               "unknown value 7 (expected L1 or L2)");
  auto kind = moe::sim::parse_description_json(
      replace_once(text, "{\"id\": 11, \"plane\": 1, \"a\": {\"kind\": \"Switch\"",
                   "{\"id\": 11, \"plane\": 1, \"a\": {\"kind\": 3"),
      "in.json");
  check_status(kind.status(), StatusCode::kInvalidArgument, "in.json: links[11].a.kind",
               "unknown value 3 (expected Npu or Switch)");
  // A file that parses but describes an inconsistent machine: the validator's message, with
  // the origin in front.
  auto missing_switch = moe::sim::parse_description_json(
      replace_once(text, "\"b\": {\"kind\": \"Switch\", \"id\": 5}, \"bandwidth_gbps\": 200, \"latency_ns\": 250}\n",
                   "\"b\": {\"kind\": \"Switch\", \"id\": 99}, \"bandwidth_gbps\": 200, \"latency_ns\": 250}\n"),
      "in.json");
  check_status(missing_switch.status(), StatusCode::kInvalidArgument, "in.json: links[11].b",
               "switch 99 does not exist");
  auto zero_bw = moe::sim::parse_description_json(
      replace_once(text, "\"bandwidth_gbps\": 1600", "\"bandwidth_gbps\": 0"), "in.json");
  check_status(zero_bw.status(), StatusCode::kInvalidArgument, "in.json: hbm.bandwidth_gbps",
               "must be a finite number > 0 (got 0)");
  auto nan_rate = moe::sim::parse_description_json(
      replace_once(text, "\"bf16_tflops\": 100", "\"bf16_tflops\": nan"), "in.json");
  check_status(nan_rate.status(), StatusCode::kInvalidArgument, "compute.bf16_tflops", "(got nan)");
}

TEST_CASE("sim.description: file errors name the path") {
  TempDir dir;
  std::string text = example_text();

  // Cut at a line end halfway through: the text stops inside the "npus" list.
  std::string cut = text.substr(0, text.rfind('\n', text.size() / 2));
  std::string truncated = dir.write("truncated.json", cut);
  auto t = moe::sim::load_description_file(truncated);
  check_status(t.status(), StatusCode::kParseError,
               strformat("%s:%d:", truncated.c_str(), line_of(cut + "$", "$")), "end of file");

  std::string missing = (dir.path / "absent.json").string();
  auto m = moe::sim::load_description_file(missing);
  check_status(m.status(), StatusCode::kNotFound, missing, "No such file");
  auto m2 = moe::sim::load_description(missing);
  check_status(m2.status(), StatusCode::kNotFound, missing, "cm384");

  auto d = moe::sim::load_description_file(dir.path.string());
  check_status(d.status(), StatusCode::kInvalidArgument, dir.path.string(), "not a regular file");

  std::string good = dir.write("good.json", text);
  auto g = moe::sim::load_description(good);
  CHECK_MESSAGE(g.ok(), g.status().to_string());

  // An invalid file's message starts with its path.
  std::string bad = dir.write("bad.json", replace_once(text, "\"num_planes\": 2", "\"num_planes\": 0"));
  auto b = moe::sim::load_description_file(bad);
  check_status(b.status(), StatusCode::kInvalidArgument, bad + ": num_planes", "must be 1..16");
}

TEST_CASE("sim.description: a description larger than the limit is refused before parsing") {
  std::string huge(moe::sim::kMaxDescriptionBytes + 1, ' ');
  auto t = moe::sim::parse_description_json(huge, "huge.json");
  check_status(t.status(), StatusCode::kOutOfRange, "huge.json", "more than the");
}

TEST_CASE("sim.description: randomly damaged files are accepted valid or refused, never crash") {
  const std::string text = example_text();
  std::mt19937 rng(20240611);
  auto pick = [&rng](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  const std::string alphabet = "{}[]\",:0123456789-.eLNSn \n";
  int accepted = 0, refused = 0;
  for (int round = 0; round < 1000; ++round) {
    std::string damaged = text;
    switch (round % 4) {
      case 0: damaged.resize(pick(damaged.size())); break;  // truncated
      case 1: damaged.erase(pick(damaged.size()), 1 + pick(20)); break;
      case 2: damaged[pick(damaged.size())] = alphabet[pick(alphabet.size())]; break;
      case 3: {  // one digit changed: mostly well-formed, often inconsistent
        size_t at;
        do at = pick(damaged.size());
        while (damaged[at] < '0' || damaged[at] > '9');
        damaged[at] = static_cast<char>('0' + pick(10));
        break;
      }
    }
    auto t = moe::sim::parse_description_json(damaged, "fuzz.json");
    if (t.ok()) {
      ++accepted;
      Status again = moe::sim::validate_topology(*t);
      CHECK_MESSAGE(again.ok(), again.to_string());
      CHECK(t->npu_plane_link.size() == t->npus.size() * t->num_planes);
    } else {
      ++refused;
      INFO(t.status().to_string());
      CHECK(t.status().message().rfind("fuzz.json", 0) == 0);
      CHECK(t.status().message().size() > std::string("fuzz.json: ").size());
    }
  }
  CHECK(refused > 500);
  CHECK(accepted > 0);
}
