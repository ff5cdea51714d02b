// Loading a host topology with hwloc and copying it out as plain data.
//
// Design: hwloc does the discovery; this file only (1) refuses bad input before hwloc sees it
// where hwloc would be unhelpful (an empty synthetic string, one describing millions of PUs,
// which hwloc would spend minutes and gigabytes building, a missing XML file), (2) explains
// hwloc's refusals (hwloc returns EINVAL and, at most, prints a line to stderr), and (3)
// builds HostSummary once, so no hwloc object outlives a call.
//
// Core-to-NUMA assignment: a core belongs to the NUMA node whose cpuset holds it; where
// several do (a package-wide DDR node and a cluster-local one, or HBM beside DDR), the most
// local one (smallest cpuset) wins, ties to the lowest logical index. Placement relies on
// every core having at most one node, so a dispatch thread's node is never ambiguous.
#include "runtime/host/host_topology.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include "runtime/base/check.h"
#include "runtime/base/json.h"
#include "runtime/base/log.h"
#include "runtime/host/host_options.h"
#include "runtime/host/hwloc_util.h"

namespace moe::rt::host {
namespace {

using detail::cpuset_from_bitmap;

constexpr const char* kSyntheticExample = "\"pack:2 numa:2 core:4 pu:1\"";
constexpr size_t kMaxSyntheticChars = 4096;

struct TopologyHandle {  // destroys an hwloc topology unless released
  hwloc_topology_t t = nullptr;
  ~TopologyHandle() {
    if (t) hwloc_topology_destroy(t);
  }
  hwloc_topology_t release() { return std::exchange(t, nullptr); }
};

std::vector<std::string> split_tokens(std::string_view text) {
  std::vector<std::string> tokens;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i) tokens.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return tokens;
}

// A level count as hwloc reads it (strtoul, base 0: "8", "0x8" and "010" are counts).
bool parse_count(const std::string& text, uint64_t* out) {
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(text.c_str(), &end, 0);
  if (errno == ERANGE || end != text.c_str() + text.size()) return false;
  *out = v;
  return true;
}

// One level of a synthetic description: "type:count", "type:count(attrs)" or a bare count.
// Memory attachments ("[numa]", "[numa(memory=1GB)]") are not levels.
struct SyntheticLevel {
  std::string token;
  std::string type;       // empty for a bare count
  std::string count_text;
};

std::vector<SyntheticLevel> synthetic_levels(std::string_view description) {
  std::vector<SyntheticLevel> levels;
  for (std::string& token : split_tokens(description)) {
    if (token.front() == '[') continue;
    std::string body = token.substr(0, token.find('('));
    SyntheticLevel level;
    size_t colon = body.find(':');
    if (colon == std::string::npos) {
      level.count_text = body;
    } else {
      level.type = body.substr(0, colon);
      level.count_text = body.substr(colon + 1);
    }
    level.token = std::move(token);
    levels.push_back(std::move(level));
  }
  return levels;
}

// The number of PUs the description asks for (the product of the level counts, saturating).
// Precondition: every count parses (diagnose_counts found nothing).
uint64_t synthetic_pu_count(const std::vector<SyntheticLevel>& levels) {
  uint64_t product = 1;
  for (const SyntheticLevel& level : levels) {
    uint64_t count = 0;
    if (!parse_count(level.count_text, &count)) return 0;
    if (count != 0 && product > std::numeric_limits<uint64_t>::max() / count)
      return std::numeric_limits<uint64_t>::max();
    product *= count;
  }
  return levels.empty() ? 0 : product;
}

// What is wrong with the level counts, or "" when every count is a positive number.
std::string diagnose_counts(const std::vector<SyntheticLevel>& levels) {
  for (const SyntheticLevel& level : levels) {
    uint64_t count = 0;
    if (!parse_count(level.count_text, &count))
      return strformat("'%s' in '%s' is not a count", level.count_text.c_str(),
                       level.token.c_str());
    if (count == 0)
      return strformat("count 0 in '%s' (every level needs at least 1)", level.token.c_str());
  }
  return "";
}

// Why hwloc refused a description whose counts are fine, as far as we can tell.
std::string diagnose_types(const std::vector<SyntheticLevel>& levels, int hwloc_errno) {
  for (const SyntheticLevel& level : levels) {
    if (level.type.empty()) continue;
    hwloc_obj_type_t type;
    union hwloc_obj_attr_u attr;
    if (hwloc_type_sscanf(level.type.c_str(), &type, &attr, sizeof(attr)) != 0)
      return strformat("unknown object type '%s' in '%s'", level.type.c_str(), level.token.c_str());
  }
  return strformat("hwloc refused it (%s)", std::strerror(hwloc_errno));
}

int32_t ancestor_package(hwloc_obj_t obj) {
  for (hwloc_obj_t p = obj ? obj->parent : nullptr; p; p = p->parent)
    if (p->type == HWLOC_OBJ_PACKAGE) return static_cast<int32_t>(p->logical_index);
  return kNoIndex;
}

HostSummary build_summary(hwloc_topology_t t, std::string source, bool is_this_system) {
  HostSummary s;
  s.source = std::move(source);
  s.is_this_system = is_this_system;

  int num_packages = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE);
  for (int i = 0; i < num_packages; ++i) {
    hwloc_obj_t obj = hwloc_get_obj_by_type(t, HWLOC_OBJ_PACKAGE, static_cast<unsigned>(i));
    PackageInfo p;
    p.logical_index = obj->logical_index;
    p.os_index = obj->os_index;
    p.cpus = cpuset_from_bitmap(obj->cpuset);
    s.packages.push_back(std::move(p));
  }

  int num_nodes = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
  std::vector<hwloc_obj_t> node_objs;
  for (int i = 0; i < num_nodes; ++i) {
    hwloc_obj_t obj = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
    node_objs.push_back(obj);
    NumaNodeInfo n;
    n.logical_index = obj->logical_index;
    n.os_index = obj->os_index;
    n.memory_bytes = obj->attr ? obj->attr->numanode.local_memory : 0;
    n.cpus = cpuset_from_bitmap(obj->cpuset);
    n.package = ancestor_package(obj);
    s.numa_nodes.push_back(std::move(n));
  }

  // The most local NUMA node holding `cpuset`: smallest node cpuset, ties to the lowest index.
  auto node_of = [&](hwloc_const_cpuset_t cpuset) -> int32_t {
    int32_t best = kNoIndex;
    int best_weight = 0;
    for (size_t i = 0; i < node_objs.size(); ++i) {
      hwloc_const_cpuset_t node_set = node_objs[i]->cpuset;
      if (hwloc_bitmap_iszero(node_set) || !hwloc_bitmap_isincluded(cpuset, node_set)) continue;
      int weight = hwloc_bitmap_weight(node_set);
      if (best == kNoIndex || weight < best_weight) {
        best = static_cast<int32_t>(i);
        best_weight = weight;
      }
    }
    return best;
  };

  detail::Bitmap covered = detail::make_bitmap();
  int num_cores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
  for (int i = 0; i < num_cores; ++i) {
    hwloc_obj_t obj = hwloc_get_obj_by_type(t, HWLOC_OBJ_CORE, static_cast<unsigned>(i));
    if (hwloc_bitmap_iszero(obj->cpuset)) continue;
    CoreInfo c;
    c.logical_index = static_cast<uint32_t>(s.cores.size());
    c.os_index = obj->os_index;
    c.numa_node = node_of(obj->cpuset);
    c.package = ancestor_package(obj);
    c.cpus = cpuset_from_bitmap(obj->cpuset);
    if (covered) hwloc_bitmap_or(covered.get(), covered.get(), obj->cpuset);
    s.cores.push_back(std::move(c));
  }
  int num_pus = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
  s.num_pus = static_cast<uint32_t>(num_pus < 0 ? 0 : num_pus);
  for (int i = 0; i < num_pus; ++i) {  // PUs with no Core above them stand for a core
    hwloc_obj_t obj = hwloc_get_obj_by_type(t, HWLOC_OBJ_PU, static_cast<unsigned>(i));
    if (covered && hwloc_bitmap_isset(covered.get(), obj->os_index)) continue;
    CoreInfo c;
    c.logical_index = static_cast<uint32_t>(s.cores.size());
    c.os_index = obj->os_index;
    c.numa_node = node_of(obj->cpuset);
    c.package = ancestor_package(obj);
    c.cpus = cpuset_from_bitmap(obj->cpuset);
    c.is_pu_only = true;
    s.cores.push_back(std::move(c));
  }
  for (const CoreInfo& c : s.cores)
    if (c.numa_node != kNoIndex) ++s.numa_nodes[static_cast<size_t>(c.numa_node)].num_cores;

  for (hwloc_obj_t obj = hwloc_get_next_pcidev(t, nullptr); obj;
       obj = hwloc_get_next_pcidev(t, obj)) {
    const auto& pci = obj->attr->pcidev;
    PciDeviceInfo d;
    d.bus_id = strformat("%04x:%02x:%02x.%01x", pci.domain, pci.bus, pci.dev, pci.func);
    d.vendor_id = pci.vendor_id;
    d.device_id = pci.device_id;
    d.class_id = pci.class_id;
    if (obj->name) d.name = obj->name;
    for (hwloc_obj_t child = obj->io_first_child; child; child = child->next_sibling)
      if (child->type == HWLOC_OBJ_OS_DEVICE && child->name) d.os_devices.emplace_back(child->name);
    hwloc_obj_t anchor = hwloc_get_non_io_ancestor_obj(t, obj);
    if (anchor && anchor->nodeset) {
      for (size_t i = 0; i < node_objs.size(); ++i) {
        if (hwloc_bitmap_isset(anchor->nodeset, node_objs[i]->os_index)) {
          d.numa_node = static_cast<int32_t>(i);
          break;
        }
      }
    }
    s.pci_devices.push_back(std::move(d));
  }
  return s;
}

}  // namespace

// ---- HostSummary ----

bool HostSummary::same_hardware(const HostSummary& other) const {
  return packages == other.packages && numa_nodes == other.numa_nodes && cores == other.cores &&
         num_pus == other.num_pus && pci_devices == other.pci_devices;
}

std::string HostSummary::to_json() const {
  JsonWriter w;
  w.begin_object();
  w.key("source").value(source);
  w.key("is_this_system").value(is_this_system);
  w.key("packages").begin_array();
  for (const PackageInfo& p : packages) {
    w.begin_object();
    w.key("logical_index").value(p.logical_index);
    w.key("os_index").value(p.os_index);
    w.key("cpus").value(p.cpus.to_string());
    w.end_object();
  }
  w.end_array();
  w.key("numa_nodes").begin_array();
  for (const NumaNodeInfo& n : numa_nodes) {
    w.begin_object();
    w.key("logical_index").value(n.logical_index);
    w.key("os_index").value(n.os_index);
    w.key("memory_bytes").value(n.memory_bytes);
    w.key("cpus").value(n.cpus.to_string());
    w.key("cores").value(n.num_cores);
    w.key("package").value(static_cast<int64_t>(n.package));
    w.end_object();
  }
  w.end_array();
  w.key("cores").value(static_cast<uint64_t>(cores.size()));
  w.key("pus").value(num_pus);
  w.key("pci_devices").begin_array();
  for (const PciDeviceInfo& d : pci_devices) {
    w.begin_object();
    w.key("bus_id").value(d.bus_id);
    w.key("vendor_id").value(strformat("%04x", d.vendor_id));
    w.key("device_id").value(strformat("%04x", d.device_id));
    w.key("class_id").value(strformat("%04x", d.class_id));
    w.key("name").value(d.name);
    w.key("os_devices").begin_array();
    for (const std::string& os : d.os_devices) w.value(os);
    w.end_array();
    w.key("numa_node").value(static_cast<int64_t>(d.numa_node));
    w.end_object();
  }
  w.end_array();
  w.end_object();
  return w.take();
}

std::string HostSummary::to_text() const {
  std::string out = strformat("host: %s\n", source.c_str());
  out += strformat("  %zu package(s), %zu NUMA node(s), %zu core(s), %u PU(s), %zu PCI device(s)\n",
                   packages.size(), numa_nodes.size(), cores.size(), num_pus,
                   pci_devices.size());
  for (const NumaNodeInfo& n : numa_nodes) {
    out += strformat("  NUMA L#%u (P#%u): %s, %u core(s), PUs %s", n.logical_index, n.os_index,
                     format_bytes(static_cast<double>(n.memory_bytes)).c_str(), n.num_cores,
                     n.cpus.to_string().c_str());
    if (n.package != kNoIndex) out += strformat(", package L#%d", n.package);
    out += '\n';
  }
  for (const PciDeviceInfo& d : pci_devices) {
    out += strformat("  PCI %s %04x:%04x class %04x", d.bus_id.c_str(), d.vendor_id, d.device_id,
                     d.class_id);
    if (!d.name.empty()) out += " \"" + d.name + "\"";
    for (const std::string& os : d.os_devices) out += " " + os;
    out += d.numa_node == kNoIndex ? std::string(", NUMA unknown")
                                   : strformat(", near NUMA L#%d", d.numa_node);
    out += '\n';
  }
  return out;
}

// ---- HostTopology ----

HostTopology::HostTopology(hwloc_topology* topology, std::string source, bool is_this_system)
    : topology_(topology), summary_(build_summary(topology, std::move(source), is_this_system)) {}

HostTopology::HostTopology(HostTopology&& other) noexcept
    : topology_(std::exchange(other.topology_, nullptr)),
      summary_(std::move(other.summary_)),
      synthetic_(std::move(other.synthetic_)) {}

HostTopology& HostTopology::operator=(HostTopology&& other) noexcept {
  if (this != &other) {
    if (topology_) hwloc_topology_destroy(topology_);
    topology_ = std::exchange(other.topology_, nullptr);
    summary_ = std::move(other.summary_);
    synthetic_ = std::move(other.synthetic_);
  }
  return *this;
}

HostTopology::~HostTopology() {
  if (topology_) hwloc_topology_destroy(topology_);
}

StatusOr<HostTopology> HostTopology::discover() {
  TopologyHandle h;
  if (hwloc_topology_init(&h.t) != 0)
    return make_error(StatusCode::kOutOfMemory, "hwloc_topology_init failed: %s",
                      std::strerror(errno));
  if (hwloc_topology_set_io_types_filter(h.t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT) != 0)
    MOE_WARN("hwloc: cannot enable I/O discovery (%s); PCI devices will not be listed",
             std::strerror(errno));
  if (hwloc_topology_load(h.t) != 0)
    return make_error(StatusCode::kInternal, "hwloc could not discover this host: %s",
                      std::strerror(errno));
  // HWLOC_XMLFILE / HWLOC_SYNTHETIC in the environment redirect discovery elsewhere.
  bool this_system = hwloc_topology_is_thissystem(h.t) != 0;
  std::string source = this_system ? "this system"
                                   : "this system (redirected by HWLOC_* environment: not "
                                     "this system, binding disabled)";
  hwloc_topology_t t = h.release();
  return HostTopology(t, std::move(source), this_system);
}

StatusOr<HostTopology> HostTopology::from_synthetic(std::string_view description) {
  if (description.find('\0') != std::string_view::npos)
    return make_error(StatusCode::kInvalidArgument, "synthetic host description contains a NUL byte");
  if (description.size() > kMaxSyntheticChars)
    return make_error(StatusCode::kInvalidArgument,
                      "synthetic host description is %zu characters long (at most %zu)",
                      description.size(), kMaxSyntheticChars);
  std::string text(description);
  std::vector<SyntheticLevel> levels = synthetic_levels(text);
  if (levels.empty())
    return make_error(StatusCode::kInvalidArgument,
                      "synthetic host description '%s' has no levels (example: %s)",
                      text.c_str(), kSyntheticExample);
  // Counts are checked before hwloc sees them: the PU limit below needs them, and a count
  // we cannot read is one hwloc would refuse anyway.
  std::string bad_count = diagnose_counts(levels);
  if (!bad_count.empty())
    return make_error(StatusCode::kInvalidArgument,
                      "invalid synthetic host description '%s': %s (expected levels TYPE:COUNT "
                      "from largest to smallest, e.g. %s)",
                      text.c_str(), bad_count.c_str(), kSyntheticExample);
  uint64_t pus = synthetic_pu_count(levels);
  int64_t max_pus = options::kSyntheticMaxPus.get();
  if (max_pus > 0 && pus > static_cast<uint64_t>(max_pus))
    return make_error(StatusCode::kInvalidArgument,
                      "synthetic host '%s' has %llu PUs, more than %s=%lld allows", text.c_str(),
                      static_cast<unsigned long long>(pus), options::kSyntheticMaxPus.name(),
                      static_cast<long long>(max_pus));

  // hwloc wants PUs as the last level; "pack:2 numa:4 core:8" means one PU per core.
  std::string last_type = levels.back().type;
  for (char& c : last_type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!last_type.empty() && last_type != "pu") text += " pu:1";

  TopologyHandle h;
  if (hwloc_topology_init(&h.t) != 0)
    return make_error(StatusCode::kOutOfMemory, "hwloc_topology_init failed: %s",
                      std::strerror(errno));
  errno = 0;
  if (hwloc_topology_set_synthetic(h.t, text.c_str()) != 0) {
    int err = errno ? errno : EINVAL;
    return make_error(StatusCode::kInvalidArgument,
                      "invalid synthetic host description '%s': %s (expected levels TYPE:COUNT "
                      "from largest to smallest, e.g. %s)",
                      text.c_str(), diagnose_types(levels, err).c_str(), kSyntheticExample);
  }
  if (hwloc_topology_load(h.t) != 0)
    return make_error(StatusCode::kInvalidArgument,
                      "hwloc could not build the synthetic host '%s': %s", text.c_str(),
                      std::strerror(errno));
  hwloc_topology_t t = h.release();
  HostTopology topology(t, strformat("synthetic \"%s\"", text.c_str()), false);
  topology.synthetic_ = text;
  return topology;
}

StatusOr<HostTopology> HostTopology::from_xml_file(const std::string& path) {
  struct stat st;
  if (path.empty())
    return make_error(StatusCode::kInvalidArgument, "host topology XML: empty file name");
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    return make_error(err == ENOENT ? StatusCode::kNotFound : StatusCode::kInvalidArgument,
                      "host topology XML '%s': %s", path.c_str(), std::strerror(err));
  }
  if (S_ISDIR(st.st_mode))
    return make_error(StatusCode::kInvalidArgument,
                      "host topology XML '%s' is a directory, not a file", path.c_str());

  TopologyHandle h;
  if (hwloc_topology_init(&h.t) != 0)
    return make_error(StatusCode::kOutOfMemory, "hwloc_topology_init failed: %s",
                      std::strerror(errno));
  // Keep the PCI devices the file lists (hwloc drops I/O objects by default).
  hwloc_topology_set_io_types_filter(h.t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  errno = 0;
  if (hwloc_topology_set_xml(h.t, path.c_str()) != 0) {
    int err = errno;
    return make_error(err == EACCES ? StatusCode::kInvalidArgument : StatusCode::kParseError,
                      "host topology XML '%s' cannot be read by hwloc: %s", path.c_str(),
                      std::strerror(err));
  }
  if (hwloc_topology_load(h.t) != 0)
    return make_error(StatusCode::kParseError,
                      "host topology XML '%s' is not an hwloc topology export hwloc can load "
                      "(%s); make one with `lstopo --of xml FILE`",
                      path.c_str(), std::strerror(errno));
  hwloc_topology_t t = h.release();
  return HostTopology(t, strformat("xml %s", path.c_str()), false);
}

Status HostTopology::export_xml_file(const std::string& path) const {
  if (!topology_)
    return make_error(StatusCode::kFailedPrecondition,
                      "cannot export '%s': the host topology is not loaded", path.c_str());
  errno = 0;
  if (hwloc_topology_export_xml(topology_, path.c_str(), 0) != 0)
    return make_error(StatusCode::kInvalidArgument, "cannot write host topology XML '%s': %s",
                      path.c_str(), errno ? std::strerror(errno) : "hwloc export failed");
  return ok_status();
}

}  // namespace moe::rt::host
