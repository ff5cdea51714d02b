// Choosing a transport at setup (UCX / NCCL style): each implementation, in priority order,
// is asked whether it can serve the driver; the first that can (or the one named) opens.
// The list is a plain table, not self-registration, so the order is visible in one place.
#include "interconnect/transport.h"

#include "interconnect/ic_options.h"
#include "interconnect/ub_transport.h"
#include "runtime/base/strformat.h"
#include "runtime/device/driver.h"

namespace moe::ic {
namespace {

struct Implementation {
  const char* name;
  bool (*can_serve)(const dev::Driver&, std::string*);
  StatusOr<std::unique_ptr<Transport>> (*open)(dev::Driver&, mem::GlobalMemory&,
                                               const TransportOptions&);
};

constexpr Implementation kImplementations[] = {
    {"ub", ub_can_serve, open_ub_transport},
};

}  // namespace

bool compare(uint64_t word, Cmp cmp, uint64_t value) {
  switch (cmp) {
    case Cmp::kEq: return word == value;
    case Cmp::kNe: return word != value;
    case Cmp::kGt: return word > value;
    case Cmp::kGe: return word >= value;
    case Cmp::kLt: return word < value;
    case Cmp::kLe: return word <= value;
  }
  return false;
}

const char* cmp_name(Cmp cmp) {
  switch (cmp) {
    case Cmp::kEq: return "==";
    case Cmp::kNe: return "!=";
    case Cmp::kGt: return ">";
    case Cmp::kGe: return ">=";
    case Cmp::kLt: return "<";
    case Cmp::kLe: return "<=";
  }
  return "?";
}

std::vector<std::string> transport_names() {
  std::vector<std::string> names;
  for (const Implementation& i : kImplementations) names.emplace_back(i.name);
  return names;
}

StatusOr<std::unique_ptr<Transport>> open_transport(dev::Driver& driver, mem::GlobalMemory& memory,
                                                    const TransportOptions& options) {
  std::string wanted = options.name.empty() ? options::kTransport.get() : options.name;
  std::string declined;
  for (const Implementation& i : kImplementations) {
    if (!wanted.empty() && wanted != i.name) continue;
    std::string why;
    if (!i.can_serve(driver, &why)) {
      declined += strformat("%s%s: %s", declined.empty() ? "" : "; ", i.name, why.c_str());
      continue;
    }
    return i.open(driver, memory, options);
  }
  if (declined.empty()) {
    std::string names;
    for (const Implementation& i : kImplementations)
      names += strformat("%s%s", names.empty() ? "" : ", ", i.name);
    return make_error(StatusCode::kNotFound, "open_transport: no transport named '%s' (have: %s)",
                      wanted.c_str(), names.c_str());
  }
  return make_error(StatusCode::kNotFound, "open_transport: no transport can serve driver '%s' (%s)",
                    std::string(driver.name()).c_str(), declined.c_str());
}

}  // namespace moe::ic
