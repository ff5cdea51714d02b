// Host topologies: synthetic shapes summarized exactly, refusals with clear messages, XML
// round trips, and discovery of the real host.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/base/options.h"
#include "runtime/host/host_topology.h"

namespace {

using moe::StatusCode;
using moe::rt::host::CpuSet;
using moe::rt::host::HostSummary;
using moe::rt::host::HostTopology;
using moe::rt::host::kNoIndex;

HostTopology synthetic(const char* desc) {
  auto t = HostTopology::from_synthetic(desc);
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  return std::move(t).value();
}

// A file name in the temporary folder, removed when the test ends.
struct TempFile {
  std::string path;
  explicit TempFile(const char* stem) {
    path = (std::filesystem::temp_directory_path() /
            (std::string(stem) + "-" + std::to_string(::getpid()) + ".xml"))
               .string();
  }
  ~TempFile() { std::remove(path.c_str()); }
};

std::vector<uint32_t> range(uint32_t lo, uint32_t n) {
  std::vector<uint32_t> v;
  for (uint32_t i = 0; i < n; ++i) v.push_back(lo + i);
  return v;
}

// Structural facts that hold for any host: cores partition the PUs, each core lies inside
// its NUMA node, per-node core counts add up.
void check_consistent(const HostSummary& s) {
  std::vector<uint32_t> all;
  std::vector<uint32_t> per_node(s.numa_nodes.size(), 0);
  for (size_t i = 0; i < s.cores.size(); ++i) {
    const auto& c = s.cores[i];
    CHECK(c.logical_index == i);
    CHECK_FALSE(c.cpus.empty());
    all.insert(all.end(), c.cpus.pus().begin(), c.cpus.pus().end());
    if (c.numa_node != kNoIndex) {
      REQUIRE(static_cast<size_t>(c.numa_node) < s.numa_nodes.size());
      CHECK(c.cpus.is_subset_of(s.numa_nodes[static_cast<size_t>(c.numa_node)].cpus));
      ++per_node[static_cast<size_t>(c.numa_node)];
    }
  }
  CHECK(all.size() == s.num_pus);
  CHECK(CpuSet(all).size() == s.num_pus);  // no PU in two cores
  for (size_t n = 0; n < s.numa_nodes.size(); ++n) {
    CHECK(s.numa_nodes[n].logical_index == n);
    CHECK(s.numa_nodes[n].num_cores == per_node[n]);
  }
}

}  // namespace

TEST_CASE("rt.host: synthetic 2 packages x 2 NUMA nodes x 4 cores is summarized exactly") {
  HostTopology t = synthetic("pack:2 numa:2 core:4 pu:1");
  const HostSummary& s = t.summary();
  CHECK_FALSE(t.is_this_system());
  CHECK(s.source == "synthetic \"pack:2 numa:2 core:4 pu:1\"");
  CHECK(s.packages.size() == 2);
  REQUIRE(s.numa_nodes.size() == 4);
  CHECK(s.cores.size() == 16);
  CHECK(s.num_pus == 16);
  CHECK(s.pci_devices.empty());
  for (uint32_t n = 0; n < 4; ++n) {
    CHECK(s.numa_nodes[n].os_index == n);
    CHECK(s.numa_nodes[n].cpus == CpuSet(range(4 * n, 4)));
    CHECK(s.numa_nodes[n].num_cores == 4);
    CHECK(s.numa_nodes[n].package == static_cast<int32_t>(n / 2));
    CHECK(s.numa_nodes[n].memory_bytes > 0);
  }
  for (uint32_t c = 0; c < 16; ++c) {
    CHECK(s.cores[c].numa_node == static_cast<int32_t>(c / 4));
    CHECK(s.cores[c].package == static_cast<int32_t>(c / 8));
    CHECK(s.cores[c].cpus == CpuSet({c}));
    CHECK_FALSE(s.cores[c].is_pu_only);
  }
  check_consistent(s);
  std::string json = s.to_json();
  CHECK(json.find("\"numa_nodes\":[") != std::string::npos);
  CHECK(json.find("\"cpus\":\"12-15\"") != std::string::npos);
  std::string text = s.to_text();
  CHECK(text.find("2 package(s), 4 NUMA node(s), 16 core(s), 16 PU(s)") != std::string::npos);
  CHECK(text.find("NUMA L#3 (P#3): 1.00 GiB, 4 core(s), PUs 12-15, package L#1") != std::string::npos);
}

TEST_CASE("rt.host: synthetic SMT host with 8 NUMA nodes; cores hold two PUs") {
  HostTopology t = synthetic("pack:4 numa:2 core:8 pu:2");
  const HostSummary& s = t.summary();
  CHECK(s.packages.size() == 4);
  REQUIRE(s.numa_nodes.size() == 8);
  REQUIRE(s.cores.size() == 64);
  CHECK(s.num_pus == 128);
  for (const auto& n : s.numa_nodes) CHECK(n.num_cores == 8);
  for (uint32_t c = 0; c < 64; ++c) CHECK(s.cores[c].cpus == CpuSet({2 * c, 2 * c + 1}));
  check_consistent(s);
}

TEST_CASE("rt.host: a host without packages, and PUs without cores, still has cores") {
  HostTopology small = synthetic("numa:1 core:2 pu:1");
  CHECK(small.summary().packages.empty());
  CHECK(small.summary().numa_nodes.size() == 1);
  CHECK(small.summary().cores.size() == 2);
  check_consistent(small.summary());

  HostTopology bare = synthetic("numa:1 pu:3");
  REQUIRE(bare.summary().cores.size() == 3);
  for (const auto& c : bare.summary().cores) {
    CHECK(c.is_pu_only);
    CHECK(c.numa_node == 0);
  }
  check_consistent(bare.summary());
}

TEST_CASE("rt.host: bad synthetic descriptions are refused with the reason") {
  struct Case {
    const char* desc;
    const char* says;
  };
  const Case cases[] = {
      {"pack:2 nuxx:2", "unknown object type 'nuxx' in 'nuxx:2'"},
      {"pack:x core:2", "'x' in 'pack:x' is not a count"},
      {"pack:0 core:2", "count 0 in 'pack:0'"},
      {"pack:+1000 core:1000", "'+1000' in 'pack:+1000' is not a count"},
      {"pack:2 core:99999999999999999999999", "is not a count"},
      {"", "has no levels"},
      {"   ", "has no levels"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.desc);
    auto t = HostTopology::from_synthetic(c.desc);
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(t.status().message().find(c.says) != std::string::npos, t.status().to_string());
  }
  // A million PUs would take hwloc minutes: refused up front, naming the option.
  auto huge = HostTopology::from_synthetic("pack:1000 core:1000 pu:1");
  REQUIRE_FALSE(huge.ok());
  CHECK(huge.status().code() == StatusCode::kInvalidArgument);
  CHECK(huge.status().message().find("1000000 PUs") != std::string::npos);
  CHECK(huge.status().message().find("RT_HOST_SYNTHETIC_MAX_PUS") != std::string::npos);
  auto overflow = HostTopology::from_synthetic("pack:99999999999 core:99999999999 pu:99999999");
  CHECK(overflow.status().code() == StatusCode::kInvalidArgument);
  // The limit is an option.
  REQUIRE(moe::opt::set_option("RT_HOST_SYNTHETIC_MAX_PUS", "8").ok());
  auto over_limit = HostTopology::from_synthetic("pack:2 numa:2 core:4 pu:1");
  CHECK(over_limit.status().code() == StatusCode::kInvalidArgument);
  REQUIRE(moe::opt::reset_option("RT_HOST_SYNTHETIC_MAX_PUS").ok());
  CHECK(HostTopology::from_synthetic("pack:2 numa:2 core:4 pu:1").ok());
  // Counts are read as hwloc reads them (base 0), so the limit counts what hwloc would build.
  HostTopology hex = synthetic("pack:0x2 core:010 pu:1");
  CHECK(hex.summary().packages.size() == 2);
  CHECK(hex.summary().cores.size() == 16);
  std::string with_nul("pack:2\0core:2", 13);
  CHECK(HostTopology::from_synthetic(with_nul).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("rt.host: missing, directory and malformed XML files give clear errors") {
  auto missing = HostTopology::from_xml_file("/nonexistent/host-topology.xml");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().find("/nonexistent/host-topology.xml") != std::string::npos);

  auto dir = HostTopology::from_xml_file(std::filesystem::temp_directory_path().string());
  CHECK(dir.status().code() == StatusCode::kInvalidArgument);
  CHECK(dir.status().message().find("is a directory") != std::string::npos);

  CHECK(HostTopology::from_xml_file("").status().code() == StatusCode::kInvalidArgument);

  TempFile garbage("moe-host-garbage");
  {
    std::ofstream out(garbage.path);
    out << "this is not <xml";
  }
  auto bad = HostTopology::from_xml_file(garbage.path);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kParseError);
  CHECK(bad.status().message().find(garbage.path) != std::string::npos);

  HostTopology empty;
  CHECK(empty.export_xml_file(garbage.path).code() == StatusCode::kFailedPrecondition);
  HostTopology t = synthetic("numa:1 core:2 pu:1");
  CHECK(t.export_xml_file("/nonexistent/dir/out.xml").code() == StatusCode::kInvalidArgument);
}

TEST_CASE("rt.host: a synthetic host exported to XML loads back as the same hardware") {
  for (const char* desc : {"pack:2 numa:2 core:4 pu:1", "pack:4 numa:2 core:8 pu:2", "numa:1 core:2 pu:1"}) {
    CAPTURE(desc);
    HostTopology original = synthetic(desc);
    TempFile file("moe-host-roundtrip");
    REQUIRE(original.export_xml_file(file.path).ok());
    auto loaded = HostTopology::from_xml_file(file.path);
    REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
    CHECK_FALSE(loaded->is_this_system());
    CHECK(loaded->summary().source == "xml " + file.path);
    CHECK(loaded->summary().same_hardware(original.summary()));
    CHECK(loaded->summary().to_json().find("\"source\":\"xml ") != std::string::npos);
  }
  // And the comparison can fail.
  CHECK_FALSE(synthetic("numa:1 core:2 pu:1").summary().same_hardware(
      synthetic("numa:1 core:3 pu:1").summary()));
}

TEST_CASE("rt.host: moving a topology keeps one owner") {
  HostTopology a = synthetic("numa:2 core:2 pu:1");
  HostTopology b = std::move(a);
  CHECK_FALSE(a.loaded());  // NOLINT: moved-from state is specified
  CHECK(b.loaded());
  CHECK(b.summary().numa_nodes.size() == 2);
  a = synthetic("numa:1 core:1 pu:1");
  a = std::move(b);
  CHECK(a.summary().numa_nodes.size() == 2);
}

TEST_CASE("rt.host: discovering the real host finds NUMA nodes, cores and PCI devices") {
  auto t = HostTopology::discover();
  REQUIRE_MESSAGE(t.ok(), t.status().to_string());
  const HostSummary& s = t->summary();
  INFO(s.to_text());
  CHECK(t->is_this_system());
  CHECK(s.source == "this system");
  CHECK(s.numa_nodes.size() >= 1);
  CHECK(s.cores.size() >= 1);
  CHECK(s.num_pus >= s.cores.size());
  check_consistent(s);
  for (const auto& c : s.cores) CHECK(c.numa_node != kNoIndex);
  for (const auto& d : s.pci_devices) {
    CAPTURE(d.bus_id);
    CHECK(d.bus_id.size() == 12);  // dddd:bb:dd.f
    CHECK(d.bus_id[4] == ':');
    CHECK((d.numa_node == kNoIndex || static_cast<size_t>(d.numa_node) < s.numa_nodes.size()));
  }
  // The real host, PCI devices included, survives an XML round trip too.
  TempFile file("moe-host-real");
  REQUIRE(t->export_xml_file(file.path).ok());
  auto loaded = HostTopology::from_xml_file(file.path);
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
  CHECK(loaded->summary().same_hardware(s));
  CHECK(loaded->summary().pci_devices.size() == s.pci_devices.size());
}

TEST_CASE("rt.host: a synthetic description without a PU level gets one PU per core") {
  HostTopology t = synthetic("pack:2 numa:4 core:8");  // the example
  const HostSummary& s = t.summary();
  CHECK(s.packages.size() == 2);
  CHECK(s.numa_nodes.size() == 8);
  CHECK(s.cores.size() == 64);
  CHECK(s.num_pus == 64);
}
