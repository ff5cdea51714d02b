// Parsing of --inject specs into driver fault specs. Strict: the whole number must parse,
// and the target must exist on the supernode, so a typo is refused rather than ignored.
#include <charconv>

#include "tools/lib/bringup/bringup.h"

namespace moe::tools::bringup {

StatusOr<dev::FaultSpec> parse_inject_spec(std::string_view spec, const dev::Topology& t) {
  const std::string s(spec);
  size_t colon = spec.find(':');
  if (colon == std::string_view::npos)
    return make_error(StatusCode::kInvalidArgument,
                      "--inject '%s': expected KIND:TARGET (plane-down:P, npu-lost:N, "
                      "link-down:L, hbm-error:N)", s.c_str());
  std::string_view kind = spec.substr(0, colon);
  std::string_view num = spec.substr(colon + 1);
  uint32_t target = 0;
  auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), target);
  if (num.empty() || ec != std::errc() || ptr != num.data() + num.size())
    return make_error(StatusCode::kInvalidArgument, "--inject '%s': '%s' is not a number",
                      s.c_str(), std::string(num).c_str());
  dev::FaultSpec f;
  f.target = target;
  uint32_t limit = 0;
  const char* what = "";
  if (kind == "plane-down") {
    f.kind = dev::FaultKind::kPlaneDown;
    limit = t.num_planes;
    what = "planes";
  } else if (kind == "npu-lost") {
    f.kind = dev::FaultKind::kNpuLost;
    limit = t.num_npus();
    what = "NPUs";
  } else if (kind == "link-down") {
    f.kind = dev::FaultKind::kLinkDown;
    limit = static_cast<uint32_t>(t.links.size());
    what = "links";
  } else if (kind == "hbm-error") {
    f.kind = dev::FaultKind::kHbmError;
    limit = t.num_npus();
    what = "NPUs";
    f.hbm_offset = 0;
    f.hbm_bytes = t.hbm.capacity_bytes;
  } else {
    return make_error(StatusCode::kInvalidArgument,
                      "--inject '%s': unknown fault kind '%s' (plane-down, npu-lost, "
                      "link-down, hbm-error)", s.c_str(), std::string(kind).c_str());
  }
  if (target >= limit)
    return make_error(StatusCode::kInvalidArgument, "--inject '%s': %u is out of range (%s %s has %u %s)",
                      s.c_str(), target, "supernode", t.name.c_str(), limit, what);
  return f;
}

}  // namespace moe::tools::bringup
