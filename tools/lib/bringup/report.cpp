// BringupReport rendering and the names used in messages. Text shows counts per check and
// every failure; JSON carries every entry, so a script can find any target.
#include <cstdio>
#include <map>

#include "runtime/base/json.h"
#include "runtime/base/strformat.h"
#include "tools/lib/bringup/bringup.h"

namespace moe::tools::bringup {

bool BringupReport::passed() const { return failures() == 0; }

size_t BringupReport::failures() const {
  size_t n = 0;
  for (const CheckEntry& e : entries) n += e.passed ? 0 : 1;
  return n;
}

namespace {

std::string where(const CheckEntry& e) {
  std::string s;
  auto add = [&](const char* label, uint32_t v) {
    if (v == dev::kInvalidId) return;
    if (!s.empty()) s += " ";
    s += strformat("%s %u", label, v);
  };
  add("node", e.node);
  add("npu", e.npu);
  add("plane", e.plane);
  add("link", e.link);
  return s.empty() ? "-" : s;
}

}  // namespace

std::string BringupReport::to_text() const {
  std::string out = strformat("bring-up report: supernode %s\n", supernode.c_str());
  for (const std::string& f : injected) out += strformat("  injected fault: %s\n", f.c_str());
  if (!host_text.empty()) out += "host:\n" + host_text;
  if (!placement_text.empty()) out += "placement:\n" + placement_text;
  std::map<std::string, std::pair<size_t, size_t>> counts;  // check -> passed, failed
  std::vector<std::string> order;
  for (const CheckEntry& e : entries) {
    if (!counts.count(e.check)) order.push_back(e.check);
    auto& c = counts[e.check];
    (e.passed ? c.first : c.second)++;
  }
  out += "checks:\n";
  for (const std::string& c : order)
    out += strformat("  %-11s %6zu passed %6zu failed\n", c.c_str(), counts[c].first,
                     counts[c].second);
  if (failures() > 0) {
    out += "failures:\n";
    for (const CheckEntry& e : entries) {
      if (e.passed) continue;
      out += strformat("  FAIL %-10s [%s] %s", e.check.c_str(), where(e).c_str(), e.message.c_str());
      if (!e.unit.empty())
        out += strformat(" (measured %.4g %s, expected %.4g %s)", e.measured, e.unit.c_str(),
                         e.expected, e.unit.c_str());
      out += "\n";
    }
  }
  out += strformat("result: %s (%zu failure%s)\n", passed() ? "PASS" : "FAIL", failures(),
                   failures() == 1 ? "" : "s");
  return out;
}

std::string BringupReport::to_json() const {
  JsonWriter w;
  w.begin_object();
  w.key("supernode").value(supernode);
  w.key("passed").value(passed());
  w.key("failures").value(static_cast<uint64_t>(failures()));
  w.key("injected").begin_array();
  for (const std::string& f : injected) w.value(f);
  w.end_array();
  w.key("entries").begin_array();
  for (const CheckEntry& e : entries) {
    w.begin_object();
    w.key("check").value(e.check);
    auto id = [&](const char* k, uint32_t v) {
      w.key(k);
      if (v == dev::kInvalidId) w.null(); else w.value(static_cast<uint64_t>(v));
    };
    id("node", e.node);
    id("npu", e.npu);
    id("plane", e.plane);
    id("link", e.link);
    w.key("passed").value(e.passed);
    w.key("measured").value(e.measured);
    w.key("expected").value(e.expected);
    w.key("unit").value(e.unit);
    w.key("message").value(e.message);
    w.end_object();
  }
  w.end_array();
  w.end_object();
  return w.take();
}

std::string describe_npu(const dev::Topology& t, dev::NpuId npu) {
  if (npu >= t.num_npus()) return strformat("NPU %u (unknown)", npu);
  const dev::NpuDesc& d = t.npus[npu];
  return strformat("NPU %u (node %u, #%u)", npu, d.node, d.index_in_node);
}

static std::string describe_endpoint(const dev::Topology& t, dev::Endpoint ep) {
  if (ep.kind == dev::EndpointKind::kNpu) return describe_npu(t, ep.id);
  if (ep.id >= t.switches.size()) return strformat("switch %u (unknown)", ep.id);
  const dev::SwitchDesc& s = t.switches[ep.id];
  if (s.level == dev::SwitchLevel::kL1) return strformat("L1 switch %u (node %u)", ep.id, s.node);
  return strformat("L2 switch %u", ep.id);
}

std::string describe_link(const dev::Topology& t, dev::LinkId link) {
  if (link >= t.links.size()) return strformat("link %u (unknown)", link);
  const dev::LinkDesc& l = t.links[link];
  return strformat("link %u (plane %u: %s <-> %s)", link, l.plane, describe_endpoint(t, l.a).c_str(),
                   describe_endpoint(t, l.b).c_str());
}

}  // namespace moe::tools::bringup
